# Sourced once by bootstrap; the function named by "handler" in manifest.json
# gets the event on stdin and writes the response to stdout.
greet() {
	printf 'hello from a shell runtime: '
	cat
}
