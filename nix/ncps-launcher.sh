#!@shell@
# bin/ncps (and bin/dbmate-ncps) of the Nix package: Node.js running the bundle, with xz, zstd and
# bzip2 on PATH. Where the service manager forbids memory that is first written and then executed
# (MemoryDenyWriteExecute=, set by nixpkgs' services.ncps), V8 cannot compile JavaScript to
# machine code and would abort; then Node.js runs --jitless (slower; upstream HTTP then uses
# Node's own client, src/upstream/node-http.ts, because WebAssembly is off too).
PATH="@path@${PATH:+:$PATH}"
export PATH
if @probe@; then
  exec @node@ --enable-source-maps @bundle@ @args@ "$@"
fi
exec @node@ --jitless --no-expose-wasm --enable-source-maps @bundle@ @args@ "$@"
