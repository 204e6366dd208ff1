# A client substitutes through ncps from a signed upstream: a static binary cache (xz, zstd and
# uncompressed NARs) and nix-serve, ranked by priority. ncps re-signs with its own key (the client
# trusts no other) and keeps serving from its storage once the upstream is gone.
{ pkgs, common }:

pkgs.testers.runNixOSTest {
  name = "ncps-substitute";

  nodes = {
    upstream = common.upstreamNode;
    ncps = {
      imports = [
        (common.ncpsNode {
          upstreams = [
            "http://upstream?priority=10"
            "http://upstream:5000?priority=20"
          ];
        })
      ];
      # The periodic check; started by hand below rather than waited for.
      services.ncps.fsck = {
        enable = true;
        verifyContent = true;
      };
    };
    client = common.clientNode { };
  };

  testScript = ''
    ${common.pythonHelpers}

    start_all()
    upstream.wait_for_unit("nginx.service")
    upstream.wait_for_unit("nix-serve.service")
    wait_for_ncps(ncps)
    client.wait_for_unit("multi-user.target")

    with subtest("ncps speaks the binary cache protocol"):
        info = client.succeed("curl -sSf http://ncps:8501/nix-cache-info")
        assert "StoreDir: /nix/store" in info, info
        assert client.succeed("curl -sSf http://ncps:8501/pubkey").strip() == "${common.keys.ncpsPublic}"
        assert status(client, "http://ncps:8501/" + "0" * 32 + ".narinfo") == "404"

    with subtest("without Redis the narinfo migration ran offline, before the server"):
        migration_ran_before_server(ncps)

    with subtest("the server runs as a notify service with its credentials"):
        assert unit_property(ncps, "ncps.service", "Type") == "notify"
        assert unit_property(ncps, "ncps.service", "User") == "ncps"
        assert unit_property(ncps, "ncps.service", "NotifyAccess") == "all"
        # The signing key reaches the service as a credential; the ncps user cannot read the file.
        ncps.succeed("test -e /run/credentials/ncps.service/secretKey")
        ncps.fail("runuser -u ncps -- cat /etc/ncps/secret-key")

    payloads = {}
    for compression, kib in [("xz", 256), ("zstd", 4096), ("none", 64)]:
        payloads[compression] = make_path(upstream, f"payload-{compression}", kib)
        publish(upstream, payloads[compression], compression)
    publish(upstream, "${pkgs.hello}", "xz")
    # Not in the static cache: only nix-serve (the lower-priority upstream) has it.
    nix_serve_only = make_path(upstream, "payload-nix-serve", 128)
    fetched = list(payloads.values()) + [nix_serve_only]

    with subtest("a client substitutes xz, zstd, uncompressed and nix-serve NARs through ncps"):
        for path in fetched:
            substitute(client, path)
            same_content(client, upstream, path)

    with subtest("a real package with references substitutes and runs"):
        substitute(client, "${pkgs.hello}")
        client.succeed("${pkgs.hello}/bin/hello")

    with subtest("narinfos carry ncps's signature"):
        narinfo = client.succeed(f"curl -sSf http://ncps:8501/{store_hash(payloads['xz'])}.narinfo")
        assert "Sig: ncps-test-1:" in narinfo, narinfo
        ncps.succeed("find /var/lib/ncps/store/nar -type f | grep -q .")

    with subtest("with the upstream gone, everything fetched is still served"):
        upstream.shutdown()
        for path in fetched:
            forget(client, path)
            substitute(client, path)
        assert status(client, "http://ncps:8501/" + "1" * 32 + ".narinfo") == "404"
        ncps.succeed("systemctl is-active ncps.service")

    with subtest("the fsck unit finds the cache consistent, then a NAR file that went missing"):
        ncps.succeed("systemctl list-timers --all | grep -q ncps-fsck.timer")
        ncps.succeed("systemctl start ncps-fsck.service")
        ncps.succeed("journalctl -u ncps-fsck.service | grep -q 'consistent: no problems found'")
        nar = ncps.succeed("find /var/lib/ncps/store/nar -type f | head -n 1").strip()
        ncps.succeed(f"rm {nar}")
        ncps.fail("systemctl start ncps-fsck.service")
        ncps.succeed("journalctl -u ncps-fsck.service | grep -q 'fsck found: NAR missing from storage'")
        ncps.succeed("systemctl is-active ncps.service")
  '';
}
