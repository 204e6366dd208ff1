{
  description = "ncps: Nix binary cache proxy server (TypeScript implementation)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # better-sqlite3's addon is built from source; esbuild's binary is fetched for these two.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Node.js 22 (LTS) runs the bundle and builds the addon; the bundle targets Node >= 20.
      ncpsFor = pkgs: pkgs.callPackage ./nix/package.nix { nodejs = pkgs.nodejs_22; };
    in
    {
      overlays.default = final: _prev: { ncps = ncpsFor final; };

      packages = forAllSystems (
        pkgs:
        let
          ncps = ncpsFor pkgs;
        in
        {
          default = ncps;
          inherit ncps;
          docker = pkgs.callPackage ./nix/docker.nix { inherit ncps; };
          # The fixed-output npm tarballs alone, to check or refresh the hash:
          #   nix build .#npmDeps
          npmDeps = ncps.npmDeps;
        }
      );

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          # `nix run` serves with the built-in defaults; arguments go to `ncps serve`.
          program = "${pkgs.writeShellScript "ncps-serve" ''
            exec ${lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default} serve "$@"
          ''}";
          meta.description = "Run ncps serve";
        };
      });

      # The module, with this flake's package as the default for services.ncps.package.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.ncps.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      checks = forAllSystems (
        pkgs:
        import ./nix/tests {
          inherit pkgs nixpkgs;
          module = ./nix/module.nix;
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            nodejs_22
            python3 # node-gyp, for better-sqlite3
            redis
            postgresql
            nix
            xz
            zstd
            bzip2
            curl
          ];
          # S3 in the tests is s3rver, an npm devDependency: `npm ci` brings it.
          shellHook = ''
            echo "ncps dev shell: npm ci && npm test"
          '';
        };
      });
    };
}
