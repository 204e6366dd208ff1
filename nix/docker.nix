# OCI image of ncps with the Go ncps image's contract, so that a Go deployment runs it unchanged:
# the program at /bin/ncps (and /bin/dbmate-ncps), the volume /storage, /etc/passwd with the user
# ncps (uid/gid 1000, what the Go chart runs as), /tmp, no shell needed, and no CACHE_* variables
# of its own (a default there would shadow what a Go deployment passes under the deprecated names).
# SERVER_WORKERS (ours, no Go name) is set to its default so that `docker run -e SERVER_WORKERS=0`
# is visibly the knob for using every core.
#
#   docker load < result
#   docker run -p 8501:8501 -v ncps:/storage IMAGE /bin/ncps serve \
#     --cache-hostname=cache.example.org --cache-storage-local=/storage \
#     --cache-database-url=sqlite:/storage/db/db.sqlite --cache-upstream-url=https://cache.nixos.org \
#     --cache-upstream-public-key=cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
#
# The entrypoint is /bin/ncps: `docker run IMAGE serve …` works, and so does the Go form
# `docker run IMAGE /bin/ncps serve …` (ncps drops its own name given again as the first argument,
# src/cli/main.ts). As in the Go image the process runs as root unless the runtime says otherwise
# (`--user 1000`, or the Kubernetes securityContext); `docker stop` sends SIGTERM to ncps itself
# (PID 1, the wrapper execs node), which drains requests and downloads in flight before exiting.
{
  dockerTools,
  ncps,
}:

dockerTools.buildLayeredImage {
  name = "ncps";
  tag = ncps.version;

  # bin/ncps and bin/dbmate-ncps land in /bin.
  contents = [
    ncps
    dockerTools.caCertificates
  ];

  fakeRootCommands = ''
    mkdir -p storage tmp
    chmod 1777 tmp
    chown 1000:1000 storage
    chmod 0750 storage
    # Real files, not store symlinks: container runtimes refuse an /etc/passwd that points outside
    # the image root. /etc may arrive as a symlink from the contents; make it a directory.
    if [ -L etc ]; then
      mkdir etc.new
      cp -a etc/. etc.new/
      rm etc
      mv etc.new etc
    fi
    mkdir -p etc
    chmod -R u+w etc
    printf '%s\n' 'root:x:0:0:root:/storage:/dev/null' 'ncps:x:1000:1000:ncps:/storage:/dev/null' > etc/passwd
    printf '%s\n' 'root:x:0:' 'ncps:x:1000:' > etc/group
  '';

  config = {
    Entrypoint = [ "/bin/ncps" ];
    WorkingDir = "/storage";
    Env = [
      "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-bundle.crt"
      # Worker processes (--server-workers; 0: one per CPU the container may use, its CPU quota
      # counted). Lowest precedence: a flag or the config file still decides.
      "SERVER_WORKERS=1"
    ];
    ExposedPorts."8501/tcp" = { };
    Volumes."/storage" = { };
    Labels."org.opencontainers.image.description" = ncps.meta.description;
  };
}
