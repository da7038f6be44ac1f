// Forge Invocation Token verification in `jose`, the same work as `cargo bench -p forge-auth --bench
// fit`: the same claims (shared/forge-auth/benches/fit-claims.json, ~1 KB), signed RS256 with the
// same 2048-bit test key, verified against a local JWKS holding that one key (jose imports it on
// first use and caches it), with issuer, audience, algorithms ['RS256'], exp/iat/jti required and
// the same 30 s clock tolerance, at the same instant. Also the refusal of a token whose kid is not
// in the set. Prints one JSON object: node and jose versions, ns per operation and operations per
// second (mean wall time over N sequential awaited calls, after a warm-up), and the process's CPU
// time per operation (all threads).
//
//   node tests/interop/bench-fit.mjs [iterations=20000]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import * as jose from 'jose';

const here = path.dirname(fileURLToPath(import.meta.url));
const crate = path.join(here, '..', '..', 'shared', 'forge-auth');
const fixtures = path.join(crate, 'tests', 'fixtures');
const read = (...p) => fs.readFileSync(path.join(...p), 'utf8');

const NOW = 1_780_000_000; // as in benches/fit.rs: 5 s after iat, 20 s before exp
const APP_ID = 'ari:cloud:ecosystem::app/8f2b0d6e-3c1a-4e5b-9a7d-2f6c4b1e0a93';
const KID = 'forge-test-key-1';
const UNKNOWN_KID = 'forge-test-key-2';
const iterations = Number(process.argv[2] ?? 20000);
if (!Number.isInteger(iterations) || iterations <= 0) throw new Error('iterations must be a positive integer');

const claims = JSON.parse(read(crate, 'benches', 'fit-claims.json'));
const sign = async (pem, kid) =>
  new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
    .sign(await jose.importPKCS8(pem, 'RS256'));
const token = await sign(read(fixtures, 'fit-test-key-1.private.pem'), KID);
const unknownToken = await sign(read(fixtures, 'fit-test-key-2.private.pem'), UNKNOWN_KID);

const publicKey = await jose.importSPKI(read(fixtures, 'fit-test-key-1.public.pem'), 'RS256', { extractable: true });
const jwks = jose.createLocalJWKSet({
  keys: [{ ...(await jose.exportJWK(publicKey)), kid: KID, alg: 'RS256', use: 'sig' }],
});
const options = {
  issuer: 'forge/invocation-token',
  audience: APP_ID,
  algorithms: ['RS256'],
  requiredClaims: ['exp', 'iat', 'jti'],
  clockTolerance: 30,
  currentDate: new Date(NOW * 1000),
};

async function verify() {
  const { payload } = await jose.jwtVerify(token, jwks, options);
  if (typeof payload.jti !== 'string' || !payload.app?.installationId) throw new Error('claims');
}

async function refuseUnknownKid() {
  try {
    await jose.jwtVerify(unknownToken, jwks, options);
  } catch (e) {
    if (e.code === 'ERR_JWKS_NO_MATCHING_KEY') return;
    throw e;
  }
  throw new Error('an unknown kid was accepted');
}

async function time(name, n, fn) {
  for (let i = 0; i < Math.min(2000, n); i++) await fn(); // warm up the JIT (and jose's key cache)
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await fn();
  const ns = Number(process.hrtime.bigint() - start) / n;
  const used = process.cpuUsage(cpu); // µs, every thread of the process (WebCrypto runs on libuv's pool)
  const cpuNs = ((used.user + used.system) * 1000) / n;
  return [name, { ns_per_op: Math.round(ns), ops_per_s: Math.round(1e9 / ns), cpu_ns_per_op: Math.round(cpuNs) }];
}

const joseVersion = JSON.parse(read(path.dirname(createRequire(import.meta.url).resolve('jose')), '..', '..', 'package.json')).version;
const results = Object.fromEntries([
  await time('fit/verify_cached_key', iterations, verify),
  await time('fit/refuse_unknown_kid', iterations * 5, refuseUnknownKid),
]);
console.log(JSON.stringify({
  node: process.version,
  jose: joseVersion,
  token_bytes: token.length,
  claims_bytes: JSON.stringify(claims).length,
  iterations,
  results,
}));
