# Upgrade, and optionally rollback, of a running cache. The machine boots with `previousPackage`
# (the previous release; by default the same code under another version, so that the switch really
# restarts the service) and fills its cache; a narinfo is also left in the legacy layout, as older
# ncps versions stored them. Switching to the specialisation with the new package must run the
# migrations (the offline narinfo migration before the new server starts) and keep serving
# everything. With `rollback`, switching back to the first generation must still serve it all,
# including what the new version stored.
{
  pkgs,
  common,
  package,
  previousPackage,
  rollback ? false,
}:

pkgs.testers.runNixOSTest {
  name = if rollback then "ncps-rollback" else "ncps-upgrade";

  nodes = {
    upstream = common.upstreamNode;
    ncps =
      { lib, ... }:
      {
        imports = [ (common.ncpsNode { ncpsPackage = previousPackage; }) ];
        specialisation.new.configuration = {
          services.ncps.package = lib.mkForce package;
        };
      };
    client = common.clientNode { };
  };

  testScript =
    { nodes, ... }:
    ''
      ${common.pythonHelpers}

      previous_system = "${nodes.ncps.system.build.toplevel}"
      new_system = previous_system + "/specialisation/new"
      previous_package = "${previousPackage}"
      new_package = "${package}"

      start_all()
      upstream.wait_for_unit("nginx.service")
      wait_for_ncps(ncps)
      client.wait_for_unit("multi-user.target")

      with subtest("the previous package serves and fills the cache"):
          assert previous_package in serving_package(ncps), serving_package(ncps)
          before: list[str] = []
          for i, compression in enumerate(["xz", "zstd", "xz"]):
              path = make_path(upstream, f"before-{i}", 512)
              publish(upstream, path, compression)
              substitute(client, path)
              before.append(path)

      with subtest("a narinfo in the legacy layout, as older versions stored it"):
          legacy = make_path(ncps, "legacy", 64)
          plant_legacy(ncps, legacy)

      with subtest("switching to the new package restarts ncps after the migrations"):
          old_pid = main_pid(ncps)
          boot_migration = int(unit_property(ncps, "ncps-migrate-narinfo.service", "ExecMainExitTimestampMonotonic"))
          ncps.succeed(f"{new_system}/bin/switch-to-configuration test")
          wait_for_ncps(ncps)
          assert main_pid(ncps) != old_pid
          assert new_package in serving_package(ncps), serving_package(ncps)
          # The narinfo migration ran again, for the new server, and before it.
          migration_ran_before_server(ncps)
          assert int(unit_property(ncps, "ncps-migrate-narinfo.service", "ExecMainExitTimestampMonotonic")) > boot_migration
          ncps.succeed(f"test ! -e {legacy_narinfo_file(legacy)}")

      with subtest("after the upgrade everything is served, the migrated narinfo too"):
          upstream.succeed("systemctl stop nginx.service nix-serve.service")
          for path in before:
              forget(client, path)
          for path in before + [legacy]:
              substitute(client, path)
          same_content(client, ncps, legacy)
    ''
    + pkgs.lib.optionalString rollback ''

      with subtest("the new version caches more"):
          upstream.succeed("systemctl start nginx.service")
          after = make_path(upstream, "after-upgrade", 256)
          publish(upstream, after, "zstd")
          substitute(client, after)

      with subtest("rolling back to the previous generation keeps serving everything"):
          new_pid = main_pid(ncps)
          ncps.succeed(f"{previous_system}/bin/switch-to-configuration test")
          wait_for_ncps(ncps)
          assert main_pid(ncps) != new_pid
          assert previous_package in serving_package(ncps), serving_package(ncps)
          upstream.succeed("systemctl stop nginx.service")
          for path in before + [legacy, after]:
              forget(client, path)
              substitute(client, path)
    '';
}
