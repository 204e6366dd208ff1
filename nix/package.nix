# ncps as a Nix package: the esbuild bundle run by nixpkgs' Node.js, with better-sqlite3's native
# addon built from source against the same Node.js, behind a `bin/ncps` wrapper that also puts
# xz, zstd and bzip2 on PATH (ncps runs them to check compressed NARs), and `bin/dbmate-ncps`,
# the migration step nixpkgs' services.ncps runs before the server; with the man page ncps(1) and
# bash, zsh and fish completions, generated from the option table.
#
# npm dependencies: package-lock.json has `integrity` but no `resolved` URLs, which nixpkgs'
# fetchNpmDeps and importNpmLock both need. So `npmDeps` below is a fixed-output derivation that
# runs `npm pack` for every locked package against npm's default registry and keeps only the
# tarballs, each checked against the lock's integrity. Its content is the registry's bytes, so the
# hash does not depend on the npm version used. The build then points the lock at those tarballs
# and installs offline. The hash and a fingerprint of the lock live in ./npm-deps.json; refresh
# both with `nix/update-npm-deps.sh` whenever package-lock.json changes (docs/nixos.md).
# passthru.s3rver is the npm devDependency s3rver built from the same tarballs, for the VM tests.
{
  lib,
  stdenv,
  stdenvNoCC,
  nodejs,
  python3,
  makeWrapper,
  installShellFiles,
  srcOnly,
  cacert,
  xz,
  zstd,
  bzip2,
  # Override when the lock changed and the hash in ./npm-deps.json is not refreshed yet
  # (lib.fakeHash makes Nix print the right one).
  npmDepsHash ? (lib.importJSON ./npm-deps.json).hash,
}:

let
  packageJSON = lib.importJSON ../package.json;
  lockFile = ../package-lock.json;

  # A lock change changes the name, so a stale output of the same hash is never reused.
  lockId = builtins.substring 0 12 (builtins.hashFile "sha256" lockFile);

  npmDeps = stdenvNoCC.mkDerivation {
    name = "ncps-npm-deps-${lockId}";
    src = lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.unions [
        lockFile
        ./npm-deps.mjs
      ];
    };
    nativeBuildInputs = [ nodejs ];

    # npm's default registry; set NIX_NPM_REGISTRY in the environment of the building Nix (the
    # daemon's, with a daemon) to use a mirror. Tarballs are checked against the lock either way.
    impureEnvVars = lib.fetchers.proxyImpureEnvVars ++ [ "NIX_NPM_REGISTRY" ];
    SSL_CERT_FILE = "${cacert}/etc/ssl/certs/ca-bundle.crt";
    NODE_EXTRA_CA_CERTS = "${cacert}/etc/ssl/certs/ca-bundle.crt";

    buildPhase = ''
      runHook preBuild
      export HOME="$TMPDIR" npm_config_cache="$TMPDIR/npm-cache"
      export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
      if [ -n "''${NIX_NPM_REGISTRY:-}" ]; then export npm_config_registry="$NIX_NPM_REGISTRY"; fi
      mapfile -t specs < <(node nix/npm-deps.mjs specs package-lock.json | cut -f1)
      echo "fetching ''${#specs[@]} npm packages"
      mkdir -p "$TMPDIR/pack" "$out"
      npm pack --ignore-scripts --json --pack-destination "$TMPDIR/pack" "''${specs[@]}" > "$TMPDIR/pack.json"
      node nix/npm-deps.mjs collect package-lock.json "$TMPDIR/pack.json" "$TMPDIR/pack" "$out"
      node nix/npm-deps.mjs verify package-lock.json "$out"
      runHook postBuild
    '';
    dontConfigure = true;
    dontInstall = true;
    dontFixup = true;

    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = npmDepsHash;
  };

  # node-gyp builds addons against the Node.js source tree (headers and common.gypi), as
  # nixpkgs' npm hooks do.
  nodeSrc = srcOnly nodejs;
  nodeGyp = "${nodejs}/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js";

  # node_modules from the locked tarballs, offline, with no install scripts.
  npmInstall = ''
    export HOME="$TMPDIR" npm_config_cache="$TMPDIR/npm-cache"
    export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
    node nix/npm-deps.mjs verify package-lock.json ${npmDeps}
    node nix/npm-deps.mjs rewrite package-lock.json ${npmDeps} > "$TMPDIR/package-lock.json"
    cp "$TMPDIR/package-lock.json" package-lock.json
    npm ci --offline --ignore-scripts
  '';

  # `copyClosure DEST NAME [--exclude NAME]...`: an installed package and what it loads at run time.
  copyClosure = ''
    copyClosure() {
      local dest="$1" root="$2"
      shift 2
      for p in $(node nix/npm-deps.mjs runtime-closure package-lock.json "$root" "$@"); do
        mkdir -p "$dest/$(dirname "$p")"
        cp -r "$p" "$dest/$p"
      done
    }
  '';

  # s3rver (an npm devDependency) from the same tarballs: the S3 server of the VM tests.
  s3rver = stdenv.mkDerivation {
    pname = "ncps-test-s3rver";
    version = (lib.importJSON lockFile).packages."node_modules/s3rver".version or "0";
    src = lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.unions [
        ../package.json
        lockFile
        ./npm-deps.mjs
      ];
    };
    nativeBuildInputs = [
      nodejs
      makeWrapper
    ];
    configurePhase = npmInstall;
    dontBuild = true;
    installPhase = ''
      ${copyClosure}
      copyClosure "$out/lib/s3rver" s3rver
      mkdir -p "$out/bin"
      # s3rver makes continuation tokens with DES, which OpenSSL 3 keeps in its legacy provider.
      makeWrapper ${lib.getExe nodejs} "$out/bin/s3rver" \
        --add-flags "--openssl-legacy-provider $out/lib/s3rver/node_modules/s3rver/bin/s3rver.js"
    '';
    meta.mainProgram = "s3rver";
  };
in
stdenv.mkDerivation {
  pname = "ncps";
  inherit (packageJSON) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      lockFile
      ../tsconfig.json
      ../scripts/build.mjs
      ../src
      ./npm-deps.mjs
    ];
  };

  nativeBuildInputs = [
    nodejs
    python3
    makeWrapper
    installShellFiles
  ];

  configurePhase = ''
    runHook preConfigure
    ${npmInstall}
    # The one native addon; no prebuilt download, no install scripts.
    (cd node_modules/better-sqlite3 && node ${nodeGyp} rebuild --release --nodedir=${nodeSrc} --jobs="$NIX_BUILD_CORES")
    runHook postConfigure
  '';

  buildPhase = ''
    runHook preBuild
    node scripts/build.mjs
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    libdir="$out/lib/ncps"
    mkdir -p "$libdir/node_modules" "$out/bin"
    cp dist/ncps.cjs "$libdir/"
    if [ -f dist/ncps.cjs.map ]; then cp dist/ncps.cjs.map "$libdir/"; fi

    # better-sqlite3 and what it loads at run time (prebuild-install only runs at install time).
    ${copyClosure}
    copyClosure "$libdir" better-sqlite3 --exclude prebuild-install
    addon="$libdir/node_modules/better-sqlite3"
    cp "$addon/build/Release/better_sqlite3.node" "$TMPDIR/"
    rm -rf "$addon/build" "$addon/deps" "$addon/src"
    mkdir -p "$addon/build/Release"
    mv "$TMPDIR/better_sqlite3.node" "$addon/build/Release/"

    # Tells bin/ncps whether V8 may compile to machine code here (nix/jit-probe.c).
    mkdir -p "$out/libexec/ncps"
    $CC -O2 -o "$out/libexec/ncps/jit-probe" ${./jit-probe.c}
    launcher() {
      substitute ${./ncps-launcher.sh} "$out/bin/$1" \
        --subst-var-by shell ${stdenv.shell} \
        --subst-var-by path ${
          lib.makeBinPath [
            xz
            zstd
            bzip2
          ]
        } \
        --subst-var-by probe "$out/libexec/ncps/jit-probe" \
        --subst-var-by node ${lib.getExe nodejs} \
        --subst-var-by bundle "$libdir/ncps.cjs" \
        --subst-var-by args "$2"
      chmod +x "$out/bin/$1"
    }
    launcher ncps ""
    # What nixpkgs' services.ncps runs before the server (DATABASE_URL=… dbmate-ncps up): ncps's
    # own migrations, so that module works with this package swapped in (src/cli/dbmate.ts).
    launcher dbmate-ncps dbmate

    # Made by the build from the option table (scripts/build.mjs: ncps manpage, ncps completion).
    installManPage dist/man/ncps.1
    installShellCompletion --cmd ncps \
      --bash dist/completions/ncps.bash \
      --zsh dist/completions/_ncps \
      --fish dist/completions/ncps.fish
    runHook postInstall
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    "$out/bin/ncps" --version
    "$out/bin/ncps" serve --help > /dev/null
    "$out/bin/dbmate-ncps" --help > /dev/null
    test -s "$out/share/man/man1/ncps.1.gz"
    test -s "$out/share/bash-completion/completions/ncps.bash"
    test -s "$out/share/zsh/site-functions/_ncps"
    test -s "$out/share/fish/vendor_completions.d/ncps.fish"
    DATABASE_URL="sqlite:$TMPDIR/check/db.sqlite" "$out/bin/dbmate-ncps" up
    ${lib.getExe nodejs} -e '
      const Database = require(process.argv[1]);
      const db = new Database(":memory:");
      if (db.prepare("select 41 + 1 as n").get().n !== 42) process.exit(1);
    ' "$out/lib/ncps/node_modules/better-sqlite3"
    runHook postInstallCheck
  '';

  passthru = {
    # This ncps reports READY=1/WATCHDOG=1 to systemd; nix/module.nix runs it with Type=notify only then.
    systemdNotify = true;
    inherit npmDeps nodejs s3rver;
  };

  meta = {
    description = "Nix binary cache proxy server: a pull-through cache for Nix substituters";
    license = lib.licenses.mit;
    mainProgram = "ncps";
    platforms = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };
}
