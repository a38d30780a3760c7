/*
 * hearth-agent: runs functions inside a hearth microVM (as /init) or, for the
 * process engine and tests, as an ordinary process on a Unix socket.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "agent.h"
#include "msg.h"
#include "pid1.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hearth-agent [--unix PATH | --vsock [PORT] | --serial DEVICE]\n"
		"                    [--max-frame BYTES] [--runtime-api HOST:PORT] [--verbose]\n"
		"\n"
		"  --unix PATH       listen on a Unix stream socket (tests, process engine)\n"
		"  --vsock [PORT]    listen on AF_VSOCK (default port %u)\n"
		"  --serial DEVICE   use a virtio-serial port (e.g. /dev/vport0p1)\n"
		"  --max-frame N     largest frame accepted from the host (default %u)\n"
		"  --runtime-api A   where runtime mode serves the Lambda Runtime API (default\n"
		"                    127.0.0.1:9001 as PID 1, else 127.0.0.1 on a free port)\n"
		"  --handler-user U[:G]  run handlers as uid U, gid G (default U) with no\n"
		"                    supplementary groups (default as PID 1: %u; else as the\n"
		"                    agent; 0 keeps the agent's)\n"
		"  --verbose         log connections and invocations to stderr\n"
		"\n"
		"As PID 1 with no transport given, it reads hearth.transport= from the\n"
		"kernel command line (vsock, serial or unix:PATH); by default it uses the\n"
		"virtio-serial port named %s if present, else vsock.\n",
		HEARTH_AGENT_VSOCK_PORT, FRAME_DEFAULT_MAX, HEARTH_HANDLER_UID, HEARTH_AGENT_SERIAL_NAME);
}

/* As /init: pick the transport the VM was given. */
static int pick_pid1_transport(struct transport *t)
{
	char v[256];

	if (pid1_cmdline_get("hearth.transport", v, sizeof(v)) == 0) {
		if (strncmp(v, "unix:", 5) == 0) {
			t->kind = TRANSPORT_UNIX;
			snprintf(t->path, sizeof(t->path), "%s", v + 5);
			return 0;
		}
		if (strcmp(v, "vsock") == 0) {
			t->kind = TRANSPORT_VSOCK;
			return 0;
		}
	}
	/* The console driver may still be probing: give the port a moment to appear. */
	for (int i = 0; i < 100; i++) {
		if (transport_find_serial(HEARTH_AGENT_SERIAL_NAME, t->path, sizeof(t->path)) == 0) {
			t->kind = TRANSPORT_SERIAL;
			return 0;
		}
		if (strcmp(v, "serial") != 0 && i >= 20)
			break;
		usleep(20000);
	}
	t->kind = TRANSPORT_VSOCK;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "unix", required_argument, NULL, 'u' },
		{ "vsock", optional_argument, NULL, 'v' },
		{ "serial", required_argument, NULL, 's' },
		{ "max-frame", required_argument, NULL, 'm' },
		{ "runtime-api", required_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'V' },
		{ "handler-user", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct agent_opts o = { .max_frame = FRAME_DEFAULT_MAX };
	bool have_transport = false;
	int c, rc;

	o.transport.port = HEARTH_AGENT_VSOCK_PORT;
	o.pid1 = getpid() == 1;
	if (o.pid1)
		o.handler_uid = o.handler_gid = HEARTH_HANDLER_UID;
	while ((c = getopt_long(argc, argv, "u:v::s:m:r:VhH:", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			o.transport.kind = TRANSPORT_UNIX;
			snprintf(o.transport.path, sizeof(o.transport.path), "%s", optarg);
			have_transport = true;
			break;
		case 'v':
			o.transport.kind = TRANSPORT_VSOCK;
			if (optarg)
				o.transport.port = (uint32_t)strtoul(optarg, NULL, 10);
			have_transport = true;
			break;
		case 's':
			o.transport.kind = TRANSPORT_SERIAL;
			snprintf(o.transport.path, sizeof(o.transport.path), "%s", optarg);
			have_transport = true;
			break;
		case 'm': {
			unsigned long v = strtoul(optarg, NULL, 10);

			if (v < 65536 || v > FRAME_ABSOLUTE_MAX) {
				fprintf(stderr, "hearth-agent: --max-frame must be 65536..%u\n",
					FRAME_ABSOLUTE_MAX);
				return 2;
			}
			o.max_frame = v;
			break;
		}
		case 'r':
			o.runtime_addr = optarg;
			break;
		case 'V':
			o.verbose = true;
			break;
		case 'H': {
			char *end;
			unsigned long u = strtoul(optarg, &end, 10), g = u;

			if (*end == ':')
				g = strtoul(end + 1, &end, 10);
			if (*end || end == optarg || u > 0xfffffffeUL || g > 0xfffffffeUL) {
				fprintf(stderr, "hearth-agent: --handler-user wants UID or UID:GID\n");
				return 2;
			}
			o.handler_uid = (uid_t)u;
			o.handler_gid = (gid_t)g;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (o.pid1) {
		pid1_setup();
		o.verbose = true;
		if (!have_transport)
			pick_pid1_transport(&o.transport);
	} else if (!have_transport) {
		usage(stderr);
		return 2;
	} else {
		/* Orphaned grandchildren of handlers come to us, so we can reap and sweep them. */
		prctl(PR_SET_CHILD_SUBREAPER, 1);
	}
	rc = agent_run(&o);
	if (o.pid1) {
		fprintf(stderr, "hearth-agent: powering off\n");
		pid1_poweroff();
	}
	return rc;
}
