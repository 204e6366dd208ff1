# The ncps nodes of nixpkgs' own NixOS tests for services.ncps (nixos/tests/ncps*.nix: ncps,
# ncps-custom-sqlite-directory, ncps-custom-storage-local, ncps-ha-pg-redis and its -cdc variant),
# their services.ncps settings as those tests write them. Secrets are file paths here (the tests
# put small files into the store); the host names are those of the test networks.
let
  upstreamKey = "cache.example.com-1:eIGQXcGQpc00x6/XFcyacLEUmC07u4RAEHt5Y8vdglo=";

  # nixos/tests/ncps.nix: one ncps in front of harmonia, with its own signing key.
  ncps = {
    services.ncps = {
      enable = true;
      cache = {
        hostName = "ncps";
        secretKeyPath = "/run/keys/ncps-cache-key";
        upstream = {
          urls = [ "http://harmonia:5000" ];
          publicKeys = [ upstreamKey ];
        };
      };
    };
  };

  # nixos/tests/ncps-ha-pg-redis.nix: two instances on PostgreSQL, Redis and MinIO.
  ha = hostName: extra: {
    services.ncps = {
      enable = true;
      analytics.reporting.enable = false;
      cache = {
        inherit hostName;
        lock.backend = "redis";
        secretKeyPath = "/run/keys/ncps-cache-key";
        redis = {
          addresses = [ "redis:6379" ];
          passwordFile = "/run/keys/redis-password";
        };
        storage.s3 = {
          bucket = "ncps";
          region = "us-west-1";
          endpoint = "http://minio:9000";
          accessKeyIdPath = "/run/keys/minio-access-key";
          secretAccessKeyPath = "/run/keys/minio-secret-key";
        };
        upstream = {
          urls = [ "http://harmonia:5000" ];
          publicKeys = [ upstreamKey ];
        };
      }
      // extra;
    };
  };
  ncps0 = ha "ncps0" {
    databaseURL = null; # lib.mkForce null in the test
    databaseURLFile = "/run/keys/db-url";
  };
  ncps1 = ha "ncps1" { databaseURL = "postgres://ncps:easypwd@postgres:5432/ncps?sslmode=disable"; };
  cdc = {
    services.ncps.cache.cdc.enabled = true;
  };
in
{
  inherit upstreamKey;
  cases = {
    ncps = [ ncps ];
    ncps-custom-sqlite-directory = [
      ncps
      { services.ncps.cache.databaseURL = "sqlite:/path/to/ncps/db.sqlite"; }
    ];
    ncps-custom-storage-local = [
      ncps
      { services.ncps.cache.storage.local = "/path/to/ncps"; }
    ];
    ncps-ha-pg-redis-ncps0 = [ ncps0 ];
    ncps-ha-pg-redis-ncps1 = [ ncps1 ];
    ncps-ha-pg-redis-cdc-ncps0 = [
      ncps0
      cdc
    ];
    ncps-ha-pg-redis-cdc-ncps1 = [
      ncps1
      cdc
    ];
  };
}
