# nixpkgs' own ncps test configurations (./nixpkgs-cases.nix), evaluated two ways with nixpkgs'
# `lib` and the stand-ins (nothing built, no NixOS):
#   ours     nix/module.nix with nixpkgs' module present under modulesPath, as in NixOS, and this
#            project's package (the flake's nixosModules.default);
#   nixpkgs  nixpkgs' module alone (its stand-in) with only `package` swapped for this project's.
# For each: the failed assertions, warnings, the generated config file, and the scripts that
# start ncps. test/integration/nixpkgs-module.test.ts runs those through the built CLI.
#
#   nix-instantiate --eval --strict --json nix/tests/eval-nixpkgs-cases.nix --argstr libPath /path/to/nixpkgs/lib
{
  libPath ? null,
  lib ? import (/. + libPath),
}:

let
  standIns = import ./module-stand-ins.nix { inherit lib; };
  inherit (standIns) evalConfig evalNixpkgsModule pkgs;
  inherit (import ./nixpkgs-cases.nix) cases upstreamKey;

  failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  ours = modules:
    let
      c = evalConfig modules;
      s = c.services.ncps.generatedScripts;
    in
    {
      failedAssertions = failed c;
      inherit (c) warnings;
      configText = c.services.ncps.configFile.text;
      serveScript = s.serve.text;
      migrateScript = if c.systemd.services ? ncps-migrate-narinfo then s.migrateNarinfo.text else "";
      type = c.systemd.services.ncps.serviceConfig.Type;
      tmpfiles = c.systemd.tmpfiles.rules;
    };
  nixpkgs = modules:
    let
      c = evalNixpkgsModule (modules ++ [ { services.ncps.package = pkgs.ncpsTs; } ]);
      unit = c.systemd.services.ncps;
    in
    {
      failedAssertions = failed c;
      inherit (c) warnings;
      configText = c.services.ncps.standIn.configFile.text;
      wrapperScript = c.services.ncps.standIn.wrapper.text;
      execStart = unit.serviceConfig.ExecStart;
      wrapperPath = toString c.services.ncps.standIn.wrapper;
      preStart = unit.preStart;
      credentials = unit.serviceConfig.LoadCredential;
    };
in
{
  inherit upstreamKey;
  packagePath = toString pkgs.ncpsTs;
  cases = lib.mapAttrs (_: modules: {
    ours = ours modules;
    nixpkgs = nixpkgs modules;
  }) cases;
}
