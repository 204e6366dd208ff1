# The flake's checks: NixOS VM tests (pkgs.testers.runNixOSTest) and evaluations of the module.
#
#   nix build .#checks.x86_64-linux.vm-substitute -L
#
# `previousPackage` is what the upgrade and rollback tests start from. By default it is this
# package under another version (the same code, a different store path, so switching really
# restarts the service). To test a real upgrade, pass the previous release, e.g.
#   import ./nix/tests { inherit pkgs nixpkgs module package;
#     previousPackage = (builtins.getFlake "git+file:///path/to/ncps?ref=v0.1.0").packages.x86_64-linux.default; }
{
  pkgs,
  module,
  package,
  # The nixpkgs flake, for the evaluation against the real NixOS modules (skipped when null).
  nixpkgs ? null,
  previousPackage ? package.overrideAttrs (old: {
    version = "${old.version}-previous";
  }),
}:

let
  inherit (pkgs) lib;
  common = import ./common.nix { inherit pkgs module package; };

  # The stand-in evaluation of scripts/check-nix.sh, as a check.
  moduleEval =
    let
      result = import ./eval-module.nix { inherit lib; };
    in
    if result.failed == [ ] then
      pkgs.runCommand "ncps-module-eval" { } ''
        echo "${toString result.passed} of ${toString result.total} module checks hold" > $out
      ''
    else
      throw "ncps module checks failed: ${lib.concatStringsSep ", " result.failed}";

  # The module inside a real NixOS evaluation (a container, so no boot loader or file systems):
  # forcing the system's derivation evaluates every option, unit and assertion.
  nixosEval =
    let
      system = nixpkgs.lib.nixosSystem {
        modules = [
          module
          (
            { ... }:
            {
              nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
              boot.isContainer = true;
              system.stateVersion = "26.05";
              services.ncps = {
                enable = true;
                inherit package;
                openFirewall = true;
                highAvailability.enable = true;
                cache = {
                  hostName = "cache.example.org";
                  secretKeyPath = "/run/secrets/ncps-signing-key";
                  databaseURLFile = "/run/secrets/ncps-database-url";
                  storage.s3 = {
                    bucket = "ncps";
                    endpoint = "http://s3.internal:9000";
                    forcePathStyle = true;
                    accessKeyIdPath = "/run/secrets/s3-access-key-id";
                    secretAccessKeyPath = "/run/secrets/s3-secret-access-key";
                  };
                  redis = {
                    addresses = [ "redis.internal:6379" ];
                    passwordFile = "/run/secrets/redis-password";
                  };
                };
              };
            }
          )
        ];
      };
      units = system.config.systemd.units;
      text = builtins.seq system.config.system.build.toplevel.drvPath (
        units."ncps.service".text + units."ncps-migrate-narinfo.service".text
      );
    in
    pkgs.writeText "ncps-nixos-units" (builtins.unsafeDiscardStringContext text);
in
{
  vm-substitute = import ./substitute.nix { inherit pkgs common; };
  vm-upgrade = import ./upgrade.nix { inherit pkgs common package previousPackage; };
  vm-rollback = import ./upgrade.nix {
    inherit pkgs common package previousPackage;
    rollback = true;
  };
  vm-migrate-offline = import ./migrate-offline.nix { inherit pkgs common; };
  vm-migrate-online = import ./migrate-online.nix { inherit pkgs common; };
  vm-high-availability = import ./high-availability.nix {
    inherit pkgs common;
    inherit (package) s3rver;
  };
  module-eval = moduleEval;
}
// lib.optionalAttrs (nixpkgs != null) { nixos-eval = nixosEval; }
