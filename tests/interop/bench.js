// The same three operations as `cargo bench -p connect-auth`, timed in atlassian-jwt on node, so
// the README can compare them side by side. Prints one JSON object: nanoseconds per operation.
'use strict';
const fs = require('fs');
const path = require('path');
const jwt = require('atlassian-jwt');

const NOW = Math.floor(Date.now() / 1000);
const fixtures = path.join(__dirname, '..', '..', 'shared', 'connect-auth', 'tests', 'fixtures');
const privateKey = fs.readFileSync(path.join(fixtures, 'test-install-key.private.pem'), 'utf8');
const publicKey = fs.readFileSync(path.join(fixtures, 'test-install-key.public.pem'), 'utf8');
const secret = 'a-shared-secret-of-typical-length-0123456789abcdef';

function time(name, iterations, fn) {
  for (let i = 0; i < Math.min(1000, iterations); i++) fn(); // warm up the JIT
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn();
  const ns = Number(process.hrtime.bigint() - start) / iterations;
  return [name, Math.round(ns)];
}

const webhook = () => jwt.fromMethodAndUrl('POST', '/webhooks/page_updated');
const qsh = jwt.createQueryStringHash(webhook(), false, '');
const token = jwt.encodeSymmetric(
  { iss: 'a1b2c3d4-client-key', sub: '557058:0000-1111', iat: NOW, exp: NOW + 180, qsh, context: {} }, secret);
const installQsh = jwt.createQueryStringHash(jwt.fromMethodAndUrl('POST', '/installed'), false, '');
const installToken = jwt.encodeAsymmetric(
  { iss: 'a1b2c3d4-client-key', aud: ['https://app.example.com'], iat: NOW, exp: NOW + 180, qsh: installQsh },
  privateKey, jwt.AsymmetricAlgorithm.RS256, { kid: 'bench-kid' });

const results = Object.fromEntries([
  time('qsh/webhook', 200000, () => jwt.createQueryStringHash(webhook(), false, '')),
  time('hs256/verify_webhook_with_qsh', 100000, () => {
    const claims = jwt.decodeSymmetric(token, secret, jwt.SymmetricAlgorithm.HS256);
    if (claims.qsh !== jwt.createQueryStringHash(webhook(), false, '')) throw new Error('qsh');
  }),
  time('rs256/verify_signed_install', 5000, () => {
    const claims = jwt.decodeAsymmetric(installToken, publicKey, jwt.AsymmetricAlgorithm.RS256);
    if (claims.qsh !== installQsh) throw new Error('qsh');
  }),
]);
console.log(JSON.stringify({ node: process.version, 'atlassian-jwt': jwt.version, ns_per_op: results }));
