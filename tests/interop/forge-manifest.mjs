// Validates a Forge manifest (descriptor/manifest.yml) with Atlassian's own @forge/manifest, the
// package the Forge CLI lints and deploys with, pinned in package.json:
//
// 1. its JSON schema (`@forge/manifest/schema.json`, i.e. out/schema/manifest-schema.json),
//    compiled with the ajv (and ajv-formats) that @forge/manifest itself depends on, with the
//    options its SchemaValidator uses;
// 2. its validators, through its own entry points: `validate(false, path)` (the full validation
//    processor: schema, modules, endpoints and remotes, resources, permissions, Connect, ...) and
//    `ProcessorBuilder.instance().withValidation(type).build().process(path)` for every other
//    `ValidationTypes` (product-trigger scopes, Forge remote compute, ...).
//
// The manifest's own `environment.variables` are checked at their defaults: whatever the shell
// running the tests has set under those names is ignored.
//
// Usage: node forge-manifest.mjs <manifest.yml>...
// Prints one JSON line per manifest, in order:
//   {"path": "...", "valid": bool, "schemaErrors": [...], "errors": [...], "warnings": [...]}
// and exits 0 when every manifest is valid, 1 when one is not, 2 when one could not be checked
// (then the last line is {"fatal": "..."}). Several manifests in one run share the compiled
// schemas (each of the package's processors compiles the 2 MB schema once).
// Driven by tests/forge_manifest.rs; never part of the product.
import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url);
const manifestPackage = require('@forge/manifest');
const schema = require('@forge/manifest/schema.json');
// The ajv that @forge/manifest resolves, not one of ours.
const fromManifestPackage = createRequire(require.resolve('@forge/manifest'));
const Ajv = fromManifestPackage('ajv').default;
const addFormats = fromManifestPackage('ajv-formats').default;
const YAML = fromManifestPackage('yaml');

function fail(message) {
  process.stdout.write(JSON.stringify({ valid: false, fatal: message }) + '\n');
  process.exit(2);
}

const given = process.argv.slice(2);
if (given.length === 0) fail('usage: node forge-manifest.mjs <manifest.yml>...');

let compiledSchema;
function compiledSchemaCheck() {
  if (!compiledSchema) {
    const ajv = new Ajv({ allErrors: true, verbose: false, strict: false });
    addFormats(ajv);
    ajv.addVocabulary(['defaultValue', 'fieldDescription', 'fieldTitle', 'shortClassName']);
    compiledSchema = ajv.compile(schema);
  }
  return compiledSchema;
}

// 1. The schema, on the manifest as the package parses it (its own YAML parser).
function schemaErrors(manifestPath) {
  const check = compiledSchemaCheck();
  const content = readFileSync(manifestPath, 'utf8');
  let document;
  try {
    document = new manifestPackage.ManifestParserBuilder()
      .withInterpolators()
      .build()
      .parseManifest({ content, filePath: manifestPath });
  } catch (e) {
    return [`not a manifest: ${e.message}`];
  }
  if (check(document)) return [];
  return (check.errors ?? []).map(
    (e) => `${e.instancePath || '/'}: ${e.message}${e.params ? ' ' + JSON.stringify(e.params) : ''}`,
  );
}

// 2. The package's validators.
async function validatorFindings(manifestPath) {
  const { ValidationTypes, ProcessorBuilder, validate } = manifestPackage;
  const runs = [['full', () => validate(false, manifestPath)]];
  for (const type of Object.values(ValidationTypes)) {
    if (type === ValidationTypes.FULL) continue;
    runs.push([type, () => ProcessorBuilder.instance().withValidation(type).build().process(manifestPath)]);
  }
  const errors = [];
  const warnings = [];
  const seen = new Set();
  for (const [type, run] of runs) {
    const result = await run();
    for (const finding of result.errors ?? []) {
      const where = finding.line ? ` (line ${finding.line})` : '';
      const text = `${finding.message}${where} [${finding.reference}]`;
      if (seen.has(text)) continue;
      seen.add(text);
      (finding.level === 'warning' ? warnings : errors).push(`${type}: ${text}`);
    }
    if (!result.success && !(result.errors ?? []).some((f) => f.level !== 'warning')) {
      errors.push(`${type}: the processor reports failure without a message`);
    }
  }
  return { errors, warnings };
}

// The names the manifest declares under environment.variables (strings or {key, default}).
function declaredVariables(manifestPath) {
  let raw;
  try {
    raw = YAML.parse(readFileSync(manifestPath, 'utf8'));
  } catch {
    return []; // The validators report the YAML error.
  }
  const variables = raw?.environment?.variables;
  return Array.isArray(variables)
    ? variables.map((v) => (typeof v === 'string' ? v : v?.key)).filter((k) => typeof k === 'string')
    : [];
}

let allValid = true;
for (const one of given) {
  const manifestPath = path.resolve(one);
  if (!existsSync(manifestPath)) fail(`no manifest at ${manifestPath}`);
  for (const name of declaredVariables(manifestPath)) delete process.env[name];
  try {
    const fromSchema = schemaErrors(manifestPath);
    const { errors, warnings } = await validatorFindings(manifestPath);
    const valid = fromSchema.length === 0 && errors.length === 0;
    allValid &&= valid;
    process.stdout.write(
      JSON.stringify({ path: one, valid, schemaErrors: fromSchema, errors, warnings }) + '\n',
    );
  } catch (e) {
    fail(`@forge/manifest failed on ${manifestPath}: ${e && e.stack ? e.stack : e}`);
  }
}
process.exit(allValid ? 0 : 1);
