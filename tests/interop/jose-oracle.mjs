// The npm package `jose` as an independent oracle for Forge Invocation Tokens: one JSON request
// per stdin line, one JSON answer per stdout line. Driven by tests/forge_fit.rs; never part of the
// product.
import * as jose from 'jose';
import readline from 'node:readline';

async function handle(req) {
  switch (req.op) {
    case 'signFit': {
      const key = await jose.importPKCS8(req.privateKey, 'RS256');
      const token = await new jose.SignJWT(req.payload)
        .setProtectedHeader({ alg: 'RS256', kid: req.kid, typ: 'JWT' })
        .sign(key);
      return { token };
    }
    case 'jwk': {
      const key = await jose.importSPKI(req.publicKey, 'RS256', { extractable: true });
      const jwk = await jose.exportJWK(key);
      return { jwk: { ...jwk, kid: req.kid, alg: 'RS256', use: 'sig' } };
    }
    case 'verifyFit': {
      const jwks = jose.createLocalJWKSet(req.jwks);
      const { payload, protectedHeader } = await jose.jwtVerify(req.token, jwks, {
        algorithms: ['RS256'],
        issuer: 'forge/invocation-token',
        audience: req.audience,
        currentDate: new Date(req.now * 1000),
        clockTolerance: 30,
        requiredClaims: ['exp', 'iat', 'jti'],
      });
      return { claims: payload, header: protectedHeader };
    }
    default:
      throw new Error('unknown op ' + req.op);
  }
}

const rl = readline.createInterface({ input: process.stdin, terminal: false });
let queue = Promise.resolve();
rl.on('line', (line) => {
  // One answer per line, in order.
  queue = queue.then(async () => {
    let answer;
    try {
      answer = { ok: true, ...(await handle(JSON.parse(line))) };
    } catch (e) {
      answer = { ok: false, error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
