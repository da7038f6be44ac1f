// Atlassian's atlassian-jwt as an oracle: one JSON request per stdin line, one JSON answer per
// stdout line. Driven by the Rust tests in tests/; never part of the product.
'use strict';
const jwt = require('atlassian-jwt');
const readline = require('readline');

function handle(req) {
  switch (req.op) {
    case 'qsh': {
      const parsed = jwt.fromMethodAndUrl(req.method, req.url);
      return {
        canonical: jwt.createCanonicalRequest(parsed, false, req.baseUrl || ''),
        qsh: jwt.createQueryStringHash(parsed, false, req.baseUrl || ''),
      };
    }
    case 'encodeSymmetric':
      return { token: jwt.encodeSymmetric(req.payload, req.secret) };
    case 'decodeSymmetric':
      // Verifies the HS256 signature; the qsh is compared by the caller with createQueryStringHash.
      return { claims: jwt.decodeSymmetric(req.token, req.secret, jwt.SymmetricAlgorithm.HS256) };
    case 'encodeAsymmetric':
      return {
        token: jwt.encodeAsymmetric(req.payload, req.privateKey, jwt.AsymmetricAlgorithm.RS256, { kid: req.kid }),
      };
    case 'decodeAsymmetric':
      return { claims: jwt.decodeAsymmetric(req.token, req.publicKey, jwt.AsymmetricAlgorithm.RS256) };
    default:
      throw new Error('unknown op ' + req.op);
  }
}

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  let answer;
  try {
    answer = { ok: true, ...handle(JSON.parse(line)) };
  } catch (e) {
    answer = { ok: false, error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
});
