# Stand-ins for what nix/module.nix needs from NixOS and nixpkgs, so that it can be evaluated with
# nixpkgs' `lib` alone (no package set, no NixOS, nothing built): the NixOS options it writes to are
# declared loosely but by name (a misspelt option still fails, as it would in NixOS), and the few
# packages it uses are stubs whose `writeText`/`writeShellScript` keep their text.
# Used by eval-module.nix and eval-vm-tests.nix.
{ lib }:

let
  inherit (lib) types mkOption;

  fakeHash = s: builtins.substring 0 32 (builtins.hashString "sha256" s);
  stubPackage = pname: {
    type = "derivation";
    name = "${pname}-stub";
    inherit pname;
    outPath = "/nix/store/${fakeHash pname}-${pname}-stub";
    outputs = [ "out" ];
    meta.mainProgram = pname;
  };
  stubText = name: text: {
    inherit name text;
    outPath = "/nix/store/${fakeHash text}-${name}";
  };

  pkgs = {
    # nixpkgs' ncps is the Go ncps: it never notifies systemd.
    ncps = stubPackage "ncps-go" // {
      pname = "ncps";
      meta.mainProgram = "ncps";
    };
    # This project's package (what the flake's nixosModules.default sets), which does.
    ncpsTs = stubPackage "ncps" // { passthru.systemdNotify = true; };
    systemd = stubPackage "systemd";
    writeText = stubText;
    writeShellScript = name: text: stubText name "#!/bin/sh\n${text}";
  };

  # What the module may write to, typed loosely but declared: NixOS would reject an unknown name.
  unitStandIn = {
    options =
      lib.genAttrs [ "wantedBy" "requiredBy" "wants" "requires" "after" "before" "bindsTo" "partOf" "conflicts" "documentation" ] (
        _:
        mkOption {
          type = types.listOf types.str;
          default = [ ];
        }
      )
      // {
        description = mkOption {
          type = types.str;
          default = "";
        };
        path = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        environment = mkOption {
          type = types.attrsOf types.str;
          default = { };
        };
        serviceConfig = mkOption {
          type = types.attrsOf types.unspecified;
          default = { };
        };
        unitConfig = mkOption {
          type = types.attrsOf types.unspecified;
          default = { };
        };
        preStart = mkOption {
          type = types.lines;
          default = "";
        };
      };
  };

  timerStandIn = {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      timerConfig = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
      };
      unitConfig = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
      };
    };
  };

  nixosStandIns = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      users.users = mkOption {
        type = types.attrsOf (types.attrsOf types.anything);
        default = { };
      };
      users.groups = mkOption {
        type = types.attrsOf (types.attrsOf types.anything);
        default = { };
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      environment.etc = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      systemd.package = mkOption {
        type = types.unspecified;
        default = pkgs.systemd;
      };
      systemd.tmpfiles.rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule unitStandIn);
        default = { };
      };
      systemd.timers = mkOption {
        type = types.attrsOf (types.submodule timerStandIn);
        default = { };
      };
    };
  };

  # NixOS modules live under modulesPath; nixpkgs' services.ncps among them (a stand-in, see
  # ./nixpkgs/services/networking/ncps.nix). NixOS imports it in every system, so it is here too,
  # and nix/module.nix's disabledModules has to take it out, as in NixOS.
  modulesPath = ./nixpkgs;
  nixpkgsModule = modulesPath + "/services/networking/ncps.nix";

  # nix/module.nix as the flake's nixosModules.default imports it (with this project's package).
  evalConfig =
    modules:
    (lib.evalModules {
      specialArgs = { inherit modulesPath; };
      modules = [
        nixosStandIns
        nixpkgsModule
        ../module.nix
        { _module.args.pkgs = pkgs; }
        { services.ncps.package = lib.mkDefault pkgs.ncpsTs; }
      ]
      ++ modules;
    }).config;

  # nixpkgs' own module alone, as a NixOS system without this project's module has it.
  evalNixpkgsModule =
    modules:
    (lib.evalModules {
      specialArgs = { inherit modulesPath; };
      modules = [
        nixosStandIns
        nixpkgsModule
        { _module.args.pkgs = pkgs; }
      ]
      ++ modules;
    }).config;

in
{
  inherit pkgs fakeHash;
  # The module's resulting `config` for a list of configuration modules.
  inherit evalConfig evalNixpkgsModule;
}
