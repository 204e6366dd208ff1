# Two ncps instances behind one PostgreSQL database, one Redis (locks) and one S3 bucket, all on
# the `db` node. The S3 server is s3rver, the npm devDependency ncps's own tests use, built from
# the same locked tarballs (package.s3rver): MinIO leaves nixpkgs with 26.05. Secrets (database
# URL with password, S3 keys, Redis password, signing key) are host files handed over as systemd
# credentials. What one instance fetched, the other serves;
# concurrent requests for the same NAR store it once; with one instance down, the other serves.
# (The secrets here are test values in the Nix store; a real deployment keeps them out of it.)
{
  pkgs,
  common,
  s3rver,
}:

let
  dbPassword = "ncps-db-password";
  redisPassword = "ncps-redis-password";
  # s3rver's fixed credentials.
  s3AccessKey = "S3RVER";
  s3SecretKey = "S3RVER";

  ncpsInstance =
    { pkgs, ... }:
    {
      imports = [ common.module ];
      services.ncps = {
        enable = true;
        package = common.package;
        openFirewall = true;
        logLevel = "debug";
        highAvailability.enable = true;
        cache = {
          hostName = "ncps";
          secretKeyPath = "/etc/ncps/secret-key";
          databaseURLFile = "/etc/ncps/database-url";
          storage.s3 = {
            bucket = "ncps";
            endpoint = "http://db:9000";
            region = "us-east-1";
            forcePathStyle = true;
            accessKeyIdPath = "/etc/ncps/s3-access-key-id";
            secretAccessKeyPath = "/etc/ncps/s3-secret-access-key";
          };
          redis = {
            addresses = [ "db:6379" ];
            passwordFile = "/etc/ncps/redis-password";
          };
          upstream.urls = [ "http://upstream" ];
          upstream.publicKeys = [ common.keys.upstreamPublic ];
        };
      };
      environment.etc = {
        "ncps/secret-key" = {
          source = common.keys.ncpsSecret;
          mode = "0400";
        };
        "ncps/database-url" = {
          text = "postgresql://ncps:${dbPassword}@db:5432/ncps";
          mode = "0400";
        };
        "ncps/s3-access-key-id" = {
          text = s3AccessKey;
          mode = "0400";
        };
        "ncps/s3-secret-access-key" = {
          text = s3SecretKey;
          mode = "0400";
        };
        "ncps/redis-password" = {
          text = redisPassword;
          mode = "0400";
        };
      };
      environment.systemPackages = [ pkgs.curl ];
    };
in
pkgs.testers.runNixOSTest {
  name = "ncps-high-availability";

  nodes = {
    db =
      { pkgs, ... }:
      {
        virtualisation.memorySize = 2048;
        services.postgresql = {
          enable = true;
          enableTCPIP = true;
          authentication = ''
            host ncps ncps 0.0.0.0/0 scram-sha-256
            host ncps ncps ::/0 scram-sha-256
          '';
          initialScript = pkgs.writeText "ncps-init.sql" ''
            CREATE ROLE ncps WITH LOGIN PASSWORD '${dbPassword}';
            CREATE DATABASE ncps OWNER ncps;
          '';
        };
        services.redis.servers.ncps = {
          enable = true;
          port = 6379;
          bind = null;
          requirePass = redisPassword;
          openFirewall = true;
        };
        systemd.services.s3rver = {
          description = "s3rver, an S3 server for the test";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          serviceConfig = {
            ExecStart = "${pkgs.lib.getExe s3rver} --directory /var/lib/s3rver --address 0.0.0.0 --port 9000 --configure-bucket ncps";
            DynamicUser = true;
            StateDirectory = "s3rver";
          };
        };
        networking.firewall.allowedTCPPorts = [
          5432
          9000
        ];
      };
    upstream = common.upstreamNode;
    ncps1 = ncpsInstance;
    ncps2 = ncpsInstance;
    client = common.clientNode {
      substituters = [
        "http://ncps1:8501"
        "http://ncps2:8501"
      ];
    };
  };

  testScript = ''
    ${common.pythonHelpers}

    # The shared services first, so the instances find them at their first start.
    db.start()
    upstream.start()
    db.wait_for_unit("postgresql.service")
    db.wait_for_unit("redis-ncps.service")
    db.wait_for_unit("s3rver.service")
    db.wait_for_open_port(9000)
    db.wait_until_succeeds("curl -sSf http://127.0.0.1:9000/ | grep -q '<Name>ncps</Name>'")

    ncps1.start()
    ncps2.start()
    client.start()
    wait_for_ncps(ncps1)
    wait_for_ncps(ncps2)
    upstream.wait_for_unit("nginx.service")
    client.wait_for_unit("multi-user.target")

    with subtest("both instances sign with the same key and migrate online"):
        assert ncps1.succeed("curl -sSf http://localhost:8501/pubkey") == ncps2.succeed("curl -sSf http://localhost:8501/pubkey")
        for node in [ncps1, ncps2]:
            node.wait_until_succeeds(
                "[ $(systemctl show --value --property=ExecMainExitTimestampMonotonic ncps-migrate-narinfo.service) -gt 0 ]"
            )
            assert unit_property(node, "ncps-migrate-narinfo.service", "Result") == "success"

    with subtest("no secret is in the generated config file"):
        for node in [ncps1, ncps2]:
            script = node.succeed(
                "systemctl show --value --property=ExecStart ncps.service | grep -o '/nix/store/[^ ;]*-ncps-serve' | head -n1"
            ).strip()
            config = node.succeed(f"grep -o '/nix/store/[^ ]*-ncps-config.json' {script} | head -n1").strip()
            for secret in ["${dbPassword}", "${redisPassword}", "${s3SecretKey}", "/etc/ncps"]:
                node.fail(f"grep -q -- '{secret}' {config}")

    with subtest("what one instance fetched, the other serves"):
        first = make_path(upstream, "first", 1024)
        publish(upstream, first, "xz")
        narinfo = client.succeed(f"curl -sSf http://ncps1:8501/{store_hash(first)}.narinfo")
        nar = nar_url(narinfo)
        client.succeed(f"curl -sSf -o /tmp/first-1 http://ncps1:8501/{nar}")
        upstream.succeed("systemctl stop nginx.service nix-serve.service")
        assert client.succeed(f"curl -sSf http://ncps2:8501/{store_hash(first)}.narinfo") == narinfo
        client.succeed(f"curl -sSf -o /tmp/first-2 http://ncps2:8501/{nar}", "cmp /tmp/first-1 /tmp/first-2")
        client.succeed(f"nix-store --realise {first} --option substituters http://ncps2:8501")
        upstream.succeed("systemctl start nginx.service")

    with subtest("concurrent requests to both instances store a NAR once"):
        shared = make_path(upstream, "shared", 8192)
        publish(upstream, shared, "zstd")
        h = store_hash(shared)
        client.succeed(
            f"curl -sSf -o /tmp/n1 http://ncps1:8501/{h}.narinfo & curl -sSf -o /tmp/n2 http://ncps2:8501/{h}.narinfo & wait",
        )
        nar = nar_url(client.succeed("cat /tmp/n1"))
        client.succeed(
            f"(curl -sSf -o /tmp/s1 http://ncps1:8501/{nar} & curl -sSf -o /tmp/s2 http://ncps2:8501/{nar} & wait)",
            "cmp /tmp/s1 /tmp/s2",
        )
        name = nar.split("/")[-1]
        count = db.succeed(f"find -L /var/lib/s3rver/ncps -name '{name}._S3rver_object' | wc -l").strip()
        assert count == "1", f"{name} stored {count} times"

    with subtest("with one instance down the other serves everything"):
        ncps1.succeed("systemctl stop ncps.service")
        upstream.succeed("systemctl stop nginx.service")
        for path in [first, shared]:
            client.succeed(f"nix-store --delete {path} || true")
            client.succeed(f"nix-store --realise {path} --option substituters http://ncps2:8501")
            same_content(client, upstream, path)
        ncps1.succeed("systemctl start ncps.service")
        wait_for_ncps(ncps1)
        assert status(client, f"http://ncps1:8501/{store_hash(shared)}.narinfo") == "200"
  '';
}
