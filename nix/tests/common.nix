# Pieces shared by the NixOS VM tests: an upstream binary cache, an ncps server, a client, and
# Python helpers for the test scripts.
#
# The keys under ./keys are for these tests only (generated with
# `nix-store --generate-binary-cache-key`); they end up in the Nix store of the test VMs.
{
  pkgs,
  module,
  package,
}:

let
  inherit (pkgs) lib;
in
rec {
  inherit module package;

  keys = {
    ncpsSecret = ./keys/ncps.sec;
    ncpsPublic = lib.fileContents ./keys/ncps.pub;
    upstreamSecret = ./keys/upstream.sec;
    upstreamPublic = lib.fileContents ./keys/upstream.pub;
  };

  # A signed binary cache: a static one made with `nix copy --to file://` served by nginx on
  # port 80, and nix-serve on port 5000 serving (and signing) the node's whole store.
  upstreamNode =
    { pkgs, ... }:
    {
      environment.etc."nix/upstream.sec" = {
        source = keys.upstreamSecret;
        mode = "0400";
      };
      nix.settings.experimental-features = [ "nix-command" ];
      # A real package for the client to substitute (and run).
      system.extraDependencies = [ pkgs.hello ];
      systemd.tmpfiles.rules = [ "d /srv/cache 0755 root root - -" ];
      services.nginx = {
        enable = true;
        virtualHosts.upstream = {
          default = true;
          root = "/srv/cache";
        };
      };
      services.nix-serve = {
        enable = true;
        secretKeyFile = "/etc/nix/upstream.sec";
        openFirewall = true;
      };
      networking.firewall.allowedTCPPorts = [ 80 ];
      environment.systemPackages = [ pkgs.curl ];
    };

  # An ncps server with SQLite and local storage; `ncpsPackage` runs it.
  ncpsNode =
    {
      ncpsPackage ? package,
      upstreams ? [ "http://upstream" ],
    }:
    { pkgs, ... }:
    {
      imports = [ module ];
      services.ncps = {
        enable = true;
        package = ncpsPackage;
        openFirewall = true;
        logLevel = "debug";
        cache = {
          hostName = "ncps";
          secretKeyPath = "/etc/ncps/secret-key";
          upstream.urls = upstreams;
          upstream.publicKeys = [ keys.upstreamPublic ];
        };
      };
      # The signing key as a host secret: readable by root only, handed over as a credential.
      environment.etc."ncps/secret-key" = {
        source = keys.ncpsSecret;
        mode = "0400";
      };
      nix.settings.experimental-features = [ "nix-command" ];
      environment.systemPackages = [
        pkgs.curl
        pkgs.sqlite
      ];
    };

  # A Nix client whose only substituter is ncps and which trusts only ncps's key.
  clientNode =
    {
      substituters ? [ "http://ncps:8501" ],
    }:
    { lib, pkgs, ... }:
    {
      nix.settings = {
        substituters = lib.mkForce substituters;
        trusted-public-keys = lib.mkForce [ keys.ncpsPublic ];
        narinfo-cache-negative-ttl = 0;
        connect-timeout = 5;
        experimental-features = [ "nix-command" ];
      };
      environment.systemPackages = [ pkgs.curl ];
    };

  # Python helpers, put at the top of each test script.
  pythonHelpers = ''
    from typing import Any

    NIX = "nix --extra-experimental-features nix-command"


    def make_path(machine: Any, name: str, kib: int) -> str:
        """Adds a file of random bytes to the machine's store and returns its store path."""
        machine.succeed(f"head -c {kib}K /dev/urandom > /tmp/{name}")
        return machine.succeed(f"nix-store --add /tmp/{name}").strip()


    def store_hash(path: str) -> str:
        return path.split("/")[-1][:32]


    def publish(upstream: Any, path: str, compression: str) -> None:
        """Puts a store path of the upstream node into its static binary cache, signed."""
        upstream.succeed(
            f"{NIX} copy --to 'file:///srv/cache?compression={compression}"
            f"&secret-key=/etc/nix/upstream.sec' {path}"
        )


    def nar_url(narinfo: str) -> str:
        for line in narinfo.splitlines():
            if line.startswith("URL: "):
                return line[len("URL: "):]
        raise Exception(f"narinfo without URL:\n{narinfo}")


    def substitute(client: Any, path: str) -> None:
        """Realises a path on the client, which can only get it from its substituters."""
        client.succeed(f"nix-store --realise {path}")
        client.succeed(f"nix-store --verify-path {path}")


    def forget(client: Any, path: str) -> None:
        client.succeed(f"nix-store --delete {path}")


    def same_content(a: Any, b: Any, path: str) -> None:
        left = a.succeed(f"{NIX} hash path {path}").strip()
        right = b.succeed(f"{NIX} hash path {path}").strip()
        assert left == right, f"{path}: {left} != {right}"


    def legacy_narinfo_file(path: str, storage: str = "/var/lib/ncps") -> str:
        h = store_hash(path)
        return f"{storage}/store/narinfo/{h[0]}/{h[:2]}/{h}.narinfo"


    def plant_legacy(machine: Any, path: str, storage: str = "/var/lib/ncps") -> None:
        """Stores a path of the machine's own store the way older ncps versions did: the narinfo
        as a file under store/narinfo/<h0>/<h0h1>/, the NAR under store/nar/<h0>/<h0h1>/."""
        h = store_hash(path)
        machine.succeed(
            "rm -rf /tmp/legacy",
            f"{NIX} copy --to 'file:///tmp/legacy?compression=xz&secret-key=/etc/ncps/secret-key' {path}",
        )
        url = nar_url(machine.succeed(f"cat /tmp/legacy/{h}.narinfo"))
        nar = url.split("/")[-1]
        machine.succeed(
            f"install -D -m 0600 /tmp/legacy/{h}.narinfo {legacy_narinfo_file(path, storage)}",
            f"install -D -m 0600 /tmp/legacy/{url} {storage}/store/nar/{nar[0]}/{nar[:2]}/{nar}",
            f"chown -R ncps:ncps {storage}",
        )


    def unit_property(machine: Any, unit: str, prop: str) -> str:
        return machine.succeed(f"systemctl show --value --property={prop} {unit}").strip()


    def main_pid(machine: Any) -> int:
        return int(unit_property(machine, "ncps.service", "MainPID"))


    def serving_package(machine: Any) -> str:
        """The command line of the running server (names the package it runs from)."""
        return machine.succeed(f"tr '\\0' ' ' < /proc/{main_pid(machine)}/cmdline")


    def wait_for_ncps(machine: Any) -> None:
        machine.wait_for_unit("ncps.service")
        machine.wait_for_open_port(8501)
        machine.succeed("curl -sSf http://localhost:8501/healthz")
        # Ready: database and storage usable and an upstream healthy (re-checked every 60 s).
        machine.wait_until_succeeds("curl -sSf http://localhost:8501/readyz", timeout=180)


    def migration_ran_before_server(machine: Any) -> None:
        """The offline narinfo migration finished before the current server process started."""
        assert unit_property(machine, "ncps-migrate-narinfo.service", "Result") == "success"
        done = int(unit_property(machine, "ncps-migrate-narinfo.service", "ExecMainExitTimestampMonotonic"))
        started = int(unit_property(machine, "ncps.service", "ExecMainStartTimestampMonotonic"))
        assert 0 < done <= started, f"migration ended at {done}, server started at {started}"


    def status(machine: Any, url: str) -> str:
        return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {url}").strip()
  '';
}
