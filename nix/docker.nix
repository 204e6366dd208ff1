# OCI image of ncps: `docker load < result`, then
#   docker run -p 8501:8501 -v ncps:/var/lib/ncps ncps:<version> serve --cache-hostname=cache.example.org
# Runs as nobody (65534); storage and the SQLite database live in the /var/lib/ncps volume.
# The environment sets only defaults (ncps reads flag > config file > environment).
{
  lib,
  dockerTools,
  ncps,
}:

dockerTools.buildLayeredImage {
  name = "ncps";
  tag = ncps.version;

  contents = [
    dockerTools.caCertificates
    dockerTools.fakeNss
  ];

  fakeRootCommands = ''
    mkdir -p var/lib/ncps tmp
    chown 65534:65534 var/lib/ncps
    chmod 0700 var/lib/ncps
    chmod 1777 tmp
  '';

  config = {
    Entrypoint = [ (lib.getExe ncps) ];
    Cmd = [ "serve" ];
    User = "65534:65534";
    WorkingDir = "/var/lib/ncps";
    Env = [
      "CACHE_STORAGE_LOCAL=/var/lib/ncps"
      "SERVER_ADDR=:8501"
      "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-bundle.crt"
    ];
    ExposedPorts."8501/tcp" = { };
    Volumes."/var/lib/ncps" = { };
    Labels."org.opencontainers.image.description" = ncps.meta.description;
  };
}
