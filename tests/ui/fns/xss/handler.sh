#!/bin/sh
# A hostile function: its logs try to inject markup and script into the console.
cat >/dev/null
echo '<script>window.__pwned = "script";</script>' >&2
echo '<img src=x onerror="window.__pwned = &quot;img&quot;">' >&2
echo '</pre><b id="injected">bold?</b>' >&2
echo '{"ok": true}'
