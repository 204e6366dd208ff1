# Evaluates the VM test definitions (nix/tests/default.nix) without nixpkgs: `pkgs` is a stub whose
# `testers.runNixOSTest` returns its argument, so each test's Python script can be extracted (and
# compiled by scripts/check-nix.sh) and the `services.ncps` part of every node can be run through
# nix/module.nix with the stand-ins of eval-module.nix, so that a test configuration the module's
# assertions would refuse is caught before anyone boots a VM.
{
  libPath ? null,
  lib ? import (/. + libPath),
}:

let
  fakeHash = s: builtins.substring 0 32 (builtins.hashString "sha256" s);
  stub = name: {
    type = "derivation";
    inherit name;
    pname = name;
    version = "0.0.0";
    outPath = "/nix/store/${fakeHash name}-${name}";
    outputs = [ "out" ];
    meta.mainProgram = name;
    overrideAttrs = _: stub "${name}-previous";
  };

  pkgs = {
    inherit lib;
    hello = stub "hello";
    bash = stub "bash";
    coreutils = stub "coreutils";
    curl = stub "curl";
    sqlite = stub "sqlite";
    writeText = name: text: (stub name) // { inherit text; };
    runCommand = name: _: _: stub name;
    testers.runNixOSTest = test: test;
  };

  package = stub "ncps" // {
    s3rver = stub "s3rver";
  };
  tests = import ./default.nix {
    inherit pkgs package;
    module = ../module.nix;
  };
  vmTests = lib.filterAttrs (name: _: lib.hasPrefix "vm-" name) tests;

  nodeNames = [
    "ncps"
    "ncps1"
    "ncps2"
    "client"
    "upstream"
    "db"
  ];
  nodesStub = lib.genAttrs nodeNames (n: {
    system.build.toplevel = stub "nixos-system-${n}";
  });
  script = t: if builtins.isFunction t.testScript then t.testScript { nodes = nodesStub; } else t.testScript;

  # The services.ncps (and environment.etc) settings of a node module and of what it imports.
  nodeArgs = {
    inherit pkgs lib;
    config = { };
  };
  ncpsParts =
    m:
    let
      value = if builtins.isFunction m then m nodeArgs else m;
    in
    if builtins.isAttrs value then
      [
        (lib.optionalAttrs (value ? services.ncps) { services.ncps = value.services.ncps; })
      ]
      ++ lib.concatMap ncpsParts (builtins.filter (i: !(builtins.isPath i)) (value.imports or [ ]))
    else
      [ ];
  hasNcps = m: builtins.any (p: p ? services) (ncpsParts m);

  evalNode = m: (import ./module-stand-ins.nix { inherit lib; }).evalConfig (ncpsParts m);
in
lib.mapAttrs (
  _: t:
  let
    ncpsNodes = lib.filterAttrs (_: hasNcps) t.nodes;
    configs = lib.mapAttrs (_: evalNode) ncpsNodes;
  in
  {
    inherit (t) name;
    nodes = builtins.attrNames t.nodes;
    script = script t;
    ncps = lib.mapAttrs (_: c: {
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
      inherit (c) warnings;
      migrateUnit = c.systemd.services ? ncps-migrate-narinfo;
      migrateAfterServer = c.systemd.services ? ncps-migrate-narinfo && builtins.elem "ncps.service" c.systemd.services.ncps-migrate-narinfo.after;
    }) configs;
  }
) vmTests
