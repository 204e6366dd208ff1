# Offline narinfo migration: storage in the legacy layout (narinfo files under
# /var/lib/ncps/store/narinfo/<h0>/<h0h1>/<hash>.narinfo), no Redis. Starting ncps.service first
# runs the oneshot ncps-migrate-narinfo.service, which moves the narinfos into the database; only
# then does the server start, and it serves them with no upstream at all.
{ pkgs, common }:

pkgs.testers.runNixOSTest {
  name = "ncps-migrate-offline";

  nodes = {
    ncps =
      { lib, ... }:
      {
        imports = [ (common.ncpsNode { upstreams = [ "http://upstream.invalid" ]; }) ];
        # Not started at boot: the test lays out the old storage first.
        systemd.services.ncps.wantedBy = lib.mkForce [ ];
      };
    client = common.clientNode { };
  };

  testScript = ''
    ${common.pythonHelpers}

    start_all()
    ncps.wait_for_unit("multi-user.target")
    client.wait_for_unit("multi-user.target")
    ncps.fail("systemctl is-active ncps.service")

    with subtest("storage in the legacy layout"):
        legacy = [make_path(ncps, f"legacy-{i}", 64 * (i + 1)) for i in range(4)]
        for path in legacy:
            plant_legacy(ncps, path)
            ncps.succeed(f"test -f {legacy_narinfo_file(path)}")

    with subtest("starting ncps runs the migration first"):
        ncps.succeed("systemctl start ncps.service")
        wait_for_ncps(ncps)
        migration_ran_before_server(ncps)
        for path in legacy:
            ncps.succeed(f"test ! -e {legacy_narinfo_file(path)}")
        ncps.succeed("find /var/lib/ncps/store/nar -type f | grep -q .")

    with subtest("the migrated narinfos are served, without any upstream"):
        for path in legacy:
            substitute(client, path)
            same_content(client, ncps, path)

    with subtest("a restart migrates again, with nothing left to do"):
        ncps.succeed("systemctl restart ncps.service")
        wait_for_ncps(ncps)
        migration_ran_before_server(ncps)
        for path in legacy:
            forget(client, path)
            substitute(client, path)
  '';
}
