#!/bin/bash
# The Debian package (label package): cpack -G DEB builds it from this build dir, dpkg -x
# unpacks it into a scratch root, its files are checked, and the installed hearthd is run
# on the installed default configuration (its paths pointed into the scratch root by
# flags, which override the file) and answers: /healthz, the console from
# /usr/share/hearth/ui, a function deployed and invoked with the installed hearthctl.
# Exit 0 pass, 1 fail, 77 skip (a tool is missing).
set -euo pipefail
build=$1 src=$2
fail() { echo "FAIL: $*" >&2; exit 1; }
for t in cpack dpkg-deb curl groff; do
  command -v $t >/dev/null || { echo "SKIP: $t not installed (ci/setup installs it)"; exit 77; }
done
tmp=$(mktemp -d /tmp/hearth-deb.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
(cd "$build" && cpack -G DEB -B "$tmp/out" >"$tmp/cpack.log" 2>&1) || { cat "$tmp/cpack.log"; fail "cpack"; }
deb=$(ls "$tmp"/out/hearth_*_amd64.deb)
echo "package: $(basename "$deb") ($(stat -c %s "$deb") bytes)"
dpkg-deb --info "$deb" >"$tmp/info"
grep -q '^ Package: hearth$' "$tmp/info" || fail "no Package: hearth"
grep -q '^ Depends: .*libmicrohttpd12' "$tmp/info" || fail "no shared-library dependencies"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/hearth/hearthd.conf ||
  fail "/etc/hearth/hearthd.conf is not a conffile"
root=$tmp/root
dpkg -x "$deb" "$root"
for f in usr/sbin/hearthd usr/bin/hearthctl usr/lib/hearth/hearth-vmm usr/lib/hearth/hearth-agent; do
  [ -x "$root/$f" ] || fail "/$f missing or not executable"
done
for f in etc/hearth/hearthd.conf lib/systemd/system/hearthd.service \
    usr/share/hearth/ui/index.html usr/share/hearth/ui/app.js usr/share/hearth/ui/uPlot.iife.min.js \
    usr/share/man/man8/hearthd.8.gz usr/share/man/man1/hearthctl.1.gz usr/share/man/man8/hearth-vmm.8.gz \
    usr/share/doc/hearth/examples/hearth-dashboard.json usr/share/doc/hearth/examples/hearth-alerts.yml; do
  [ -s "$root/$f" ] || fail "/$f missing or empty"
done
# Nothing of the build tree leaks into what is installed.
if grep -rl "$build" "$root/etc" "$root/lib" "$root/usr/share" 2>/dev/null; then fail "build paths in the package"; fi
# Man pages render without warnings and say what they document.
for m in man8/hearthd.8 man1/hearthctl.1 man8/hearth-vmm.8; do
  out=$(zcat "$root/usr/share/man/$m.gz" | groff -man -Tutf8 -ww 2>&1 >/dev/null)
  [ -z "$out" ] || fail "$m: groff warnings: $out"
done
zcat "$root/usr/share/man/man8/hearthd.8.gz" | grep -q -- 'config' || fail "hearthd(8) lacks --config"
# The unit starts hearthd on the installed config, with hardening.
unit=$root/lib/systemd/system/hearthd.service
grep -qx 'ExecStart=/usr/sbin/hearthd --config /etc/hearth/hearthd.conf' "$unit" || fail "unit ExecStart"
for d in ProtectSystem=strict ProtectHome=yes PrivateTmp=yes NoNewPrivileges=yes StateDirectory=hearth; do
  grep -qx "$d" "$unit" || fail "unit lacks $d"
done
# The installed hearthd accepts the installed configuration as shipped...
"$root/usr/sbin/hearthd" --config "$root/etc/hearth/hearthd.conf" --help >"$tmp/help" 2>&1 ||
  { cat "$tmp/help"; fail "the installed hearthd refuses the installed hearthd.conf"; }
# ...and runs on it, with the scratch root's paths given as flags (they override the file).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$root/usr/sbin/hearthd" --config "$root/etc/hearth/hearthd.conf" --state-dir "$tmp/state" \
  --run-dir "$tmp/run" --socket "$tmp/api.sock" --listen "127.0.0.1:$port" \
  --engine process --allow-unisolated --agent "$root/usr/lib/hearth/hearth-agent" \
  --ui-dir "$root/usr/share/hearth/ui" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$tmp/log"; fail "the installed hearthd does not answer"; }
grep -q "options from $root/etc/hearth/hearthd.conf" "$tmp/log" || fail "the config file was not read"
curl -sf "http://127.0.0.1:$port/ui/uPlot.iife.min.js" | cmp -s - "$root/usr/share/hearth/ui/uPlot.iife.min.js" ||
  fail "the console is not served from /usr/share/hearth/ui"
ctl() { "$root/usr/bin/hearthctl" --url "http://127.0.0.1:$port" --key "@$tmp/state/admin.key" "$@"; }
ctl tenant create acme >/dev/null
ctl --tenant acme deploy hello "$src/examples/hello" >/dev/null
out=$(ctl --tenant acme invoke hello --data '{"n": 1}')
echo "$out" | grep -q 'Hello from hearth' || fail "invoke answered: $out"
kill $pid
wait $pid || fail "hearthd exited with $? on SIGTERM"
pid=
echo "PASS: the package installs, its hearthd runs on its config and serves a function"
