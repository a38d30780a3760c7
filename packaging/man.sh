#!/bin/sh
# packaging/man.sh PROGRAM SECTION "DESCRIPTION" BUILD_DIR OUT.gz: a man page from the
# program's --help (help2man), with the build tree's default paths replaced by the
# installed ones (/usr/lib/hearth, /usr/share/hearth/ui).
set -eu
prog=$1 sec=$2 desc=$3 build=$4 out=$5
tmp=$out.tmp
help2man --no-info --no-discard-stderr --section="$sec" --version-string="${HEARTH_VERSION:-0}" \
  --name="$desc" --output="$tmp" "$prog"
# help2man writes '-' as '\-' and may wrap paths in \fI\,...\/\fP.
b=$(printf '%s' "$build" | sed 's/-/\\\\-/g')
sed -i -e "s#$b/host/vmm/hearth\\\\-vmm#/usr/lib/hearth/hearth\\\\-vmm#g" \
  -e "s#$b/guest\\\\-agent/hearth\\\\-agent#/usr/lib/hearth/hearth\\\\-agent#g" \
  -e "s#$b/ui#/usr/share/hearth/ui#g" "$tmp"
if grep -q "$b" "$tmp"; then
  echo "man.sh: a build path is left in the man page of $prog:" >&2
  grep -n "$b" "$tmp" >&2
  exit 1
fi
gzip -9n <"$tmp" >"$out"
rm -f "$tmp"
