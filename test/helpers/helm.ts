// The real `helm` on charts/ncps, and the rendered objects checked against the Kubernetes API
// schemas. helm and the schemas come from a cache outside the repository that .ci/run fills
// (scripts/chart-tools.sh): NCPS_HELM is the helm binary, NCPS_KUBERNETES_MODELS a folder whose
// node_modules holds kubernetes-models. Without them the chart tests are skipped, except in CI.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from './ncps';

export const CHART_DIR = path.join(REPO_ROOT, 'charts', 'ncps');
export const CHART_VALUES_DIR = path.join(REPO_ROOT, 'test', 'chart', 'values');

const HELM = process.env.NCPS_HELM ?? '';
const MODELS = process.env.NCPS_KUBERNETES_MODELS ?? '';

/** Why the chart tests cannot run here, or false when they can. In CI a missing tool is an error
 * (thrown), not a skip, so that the chart is never silently untested. */
export function chartToolsMissing(): string | false {
  const missing: string[] = [];
  if (!HELM || !existsSync(HELM)) missing.push('NCPS_HELM (the helm binary)');
  if (!MODELS || !existsSync(path.join(MODELS, 'node_modules', 'kubernetes-models'))) {
    missing.push('NCPS_KUBERNETES_MODELS (a folder with node_modules/kubernetes-models)');
  }
  if (missing.length === 0) return false;
  const reason = `chart tests need ${missing.join(' and ')}: source scripts/chart-tools.sh (as .ci/run does)`;
  if (process.env.CI) throw new Error(reason);
  return reason;
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function helm(args: readonly string[]): HelmResult {
  const r = spawnSync(HELM, args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A Kubernetes object as rendered; fields are read loosely by the tests. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> }; [key: string]: any };

export interface RenderOptions {
  /** Values files under test/chart/values (by base name, without .yaml) or absolute paths. */
  values?: string[];
  /** --set-string / --set pairs. */
  set?: Record<string, string | number | boolean>;
  release?: string;
  namespace?: string;
}

function renderArgs(opts: RenderOptions): string[] {
  const args = ['template', opts.release ?? 'cache', CHART_DIR, '--namespace', opts.namespace ?? 'ncps'];
  for (const v of opts.values ?? []) args.push('-f', path.isAbsolute(v) ? v : path.join(CHART_VALUES_DIR, `${v}.yaml`));
  for (const [k, v] of Object.entries(opts.set ?? {})) {
    args.push(typeof v === 'string' ? '--set-string' : '--set', `${k}=${v}`);
  }
  return args;
}

/** `helm template`; throws with helm's message when rendering fails. */
export function render(opts: RenderOptions = {}): K8sObject[] {
  const r = helm(renderArgs(opts));
  if (r.code !== 0) throw new Error(`helm template failed (${r.code}):\n${r.stderr}`);
  const docs = parseAllDocuments(r.stdout);
  const objects: K8sObject[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`helm rendered invalid YAML: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as K8sObject | null;
    if (value !== null) objects.push(value);
  }
  return objects;
}

/** `helm template` that must fail; returns helm's stderr. */
export function renderFails(opts: RenderOptions): string {
  const r = helm(renderArgs(opts));
  if (r.code === 0) throw new Error(`helm template should have failed with ${JSON.stringify(opts)}`);
  return r.stderr;
}

// Where kubernetes-models keeps the model of each API group; ServiceMonitor comes from its
// prometheus-operator package.
function modelModule(apiVersion: string, kind: string): string {
  const nm = path.join(MODELS, 'node_modules');
  if (apiVersion.startsWith('monitoring.coreos.com/')) {
    return path.join(nm, '@kubernetes-models', 'prometheus-operator', apiVersion, `${kind}.js`);
  }
  return path.join(nm, 'kubernetes-models', apiVersion, `${kind}.js`);
}

/** Validates each object against its API schema; returns one line per problem (empty: all valid). */
export async function schemaProblems(objects: readonly K8sObject[]): Promise<string[]> {
  const problems: string[] = [];
  for (const object of objects) {
    const where = `${object.kind}/${object.metadata?.name}`;
    const file = modelModule(object.apiVersion, object.kind);
    if (!existsSync(file)) {
      problems.push(`${where}: no schema for ${object.apiVersion} ${object.kind}`);
      continue;
    }
    const mod = (await import(pathToFileURL(file).href)) as Record<string, new (data: unknown) => { validate(): void }>;
    const Model = mod[object.kind];
    if (!Model) {
      problems.push(`${where}: ${file} has no model ${object.kind}`);
      continue;
    }
    try {
      new Model(object).validate();
    } catch (error) {
      problems.push(`${where}: ${(error as Error).message}`);
    }
  }
  return problems;
}

/** Interface of each API kind in kubernetes-models' type declarations. */
function modelType(apiVersion: string, kind: string): { from: string; name: string } {
  if (apiVersion.startsWith('monitoring.coreos.com/')) return { from: `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`, name: `I${kind}` };
  return { from: `kubernetes-models/${apiVersion}/${kind}`, name: `I${kind}` };
}

/**
 * Fields the Kubernetes API does not know. The schemas accept unknown fields (so does the API
 * server, with a warning, unless asked to be strict), so a misspelt field would pass
 * schemaProblems: here every object is type-checked as a TypeScript object literal against
 * kubernetes-models' declarations, whose excess-property check names each unknown field.
 */
export function unknownFields(objects: readonly K8sObject[]): string[] {
  // Loaded here: only the chart tests need the compiler.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ts = require('typescript') as typeof import('typescript');
  const dir = mkdtempSync(path.join(MODELS, 'check-'));
  try {
    const lines: string[] = [];
    const starts: number[] = [];
    objects.forEach((o, i) => {
      const t = modelType(o.apiVersion, o.kind);
      lines.push(`import type { ${t.name} as T${i} } from ${JSON.stringify(t.from)};`);
    });
    objects.forEach((o, i) => {
      starts.push(lines.length);
      lines.push(...`export const o${i}: T${i} = ${JSON.stringify(o, null, 1)};`.split('\n'));
    });
    const file = path.join(dir, 'objects.ts');
    writeFileSync(file, lines.join('\n'));
    const program = ts.createProgram([file], {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      types: [],
    });
    const problems: string[] = [];
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
      const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
      const index = starts.findLastIndex((s) => s <= line);
      const o = objects[index];
      problems.push(`${o ? `${o.kind}/${o.metadata.name}` : 'objects.ts'}: ${text.split('\n')[0]}`);
    }
    return problems;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
