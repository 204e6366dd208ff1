# Online narinfo migration with Redis: ncps-migrate-narinfo.service runs beside the live server
# (ordered after it, not holding it back). Legacy narinfo files planted while ncps serves are moved
# into the database while a client keeps reading, and the server is never restarted.
{ pkgs, common }:

pkgs.testers.runNixOSTest {
  name = "ncps-migrate-online";

  nodes = {
    upstream = common.upstreamNode;
    ncps =
      { ... }:
      {
        imports = [ (common.ncpsNode { }) ];
        services.redis.servers.ncps = {
          enable = true;
          port = 6379;
        };
        services.ncps.cache.redis.addresses = [ "127.0.0.1:6379" ];
        systemd.services.ncps = {
          wants = [ "redis-ncps.service" ];
          after = [ "redis-ncps.service" ];
        };
      };
    client = common.clientNode { };
  };

  testScript = ''
    ${common.pythonHelpers}

    start_all()
    upstream.wait_for_unit("nginx.service")
    ncps.wait_for_unit("redis-ncps.service")
    wait_for_ncps(ncps)
    client.wait_for_unit("multi-user.target")

    with subtest("with Redis the migration runs after the server is ready"):
        ncps.wait_until_succeeds(
            "[ $(systemctl show --value --property=ExecMainExitTimestampMonotonic ncps-migrate-narinfo.service) -gt 0 ]"
        )
        assert unit_property(ncps, "ncps-migrate-narinfo.service", "Result") == "success"
        started = int(unit_property(ncps, "ncps-migrate-narinfo.service", "ExecMainStartTimestampMonotonic"))
        ready = int(unit_property(ncps, "ncps.service", "ActiveEnterTimestampMonotonic"))
        assert ready <= started, f"server ready at {ready}, migration started at {started}"

    with subtest("the server serves"):
        served = make_path(upstream, "served", 256)
        publish(upstream, served, "zstd")
        substitute(client, served)

    with subtest("legacy narinfos appear while ncps serves"):
        legacy = [make_path(ncps, f"legacy-{i}", 64) for i in range(20)]
        for path in legacy:
            plant_legacy(ncps, path)

    with subtest("the migration runs beside the live server"):
        pid = main_pid(ncps)
        narinfo_url = f"http://ncps:8501/{store_hash(served)}.narinfo"
        client.succeed(
            "systemd-run --unit=reader --property=Type=exec ${pkgs.bash}/bin/bash -c '"
            + "for i in $(${pkgs.coreutils}/bin/seq 1 300); do "
            + f"${pkgs.curl}/bin/curl -sSf -o /dev/null {narinfo_url} || echo failed >> /tmp/reader.failures; "
            + "${pkgs.coreutils}/bin/sleep 0.02; done; ${pkgs.coreutils}/bin/touch /tmp/reader.done'"
        )
        ncps.succeed("systemctl start ncps-migrate-narinfo.service")
        assert unit_property(ncps, "ncps-migrate-narinfo.service", "Result") == "success"
        assert main_pid(ncps) == pid, "the server was restarted"
        ncps.succeed("systemctl is-active ncps.service")
        for path in legacy:
            ncps.succeed(f"test ! -e {legacy_narinfo_file(path)}")
        client.wait_until_succeeds("test -e /tmp/reader.done", timeout=120)
        client.succeed("test ! -e /tmp/reader.failures")

    with subtest("the migrated narinfos are served"):
        upstream.succeed("systemctl stop nginx.service nix-serve.service")
        for path in legacy:
            substitute(client, path)
        same_content(client, ncps, legacy[0])
  '';
}
