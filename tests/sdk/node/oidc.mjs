// A local OpenID Connect issuer for the identity tests: discovery and a JWKS on a loopback port,
// RS256 and ES256 signing keys it generates (node:crypto), tokens as Entra ID would mint them,
// and key rotation. Also a TokenCredential for the Azure SDKs, and a self-signed certificate
// for Hubbub's HTTPS listener (the SDKs send bearer tokens over HTTPS only).

import { createServer } from "node:http";
import { generateKeyPairSync, sign, randomBytes, createHmac } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const AUDIENCE = "https://webpubsub.azure.com";
export const OWNER = "Web PubSub Service Owner";
export const READER = "Web PubSub Service Reader";

const b64url = (data) => Buffer.from(data).toString("base64url");

/** A signing key: RS256 or ES256, with its kid. */
export function signingKey(alg, kid = `${alg.toLowerCase()}-${randomBytes(4).toString("hex")}`) {
  const { publicKey, privateKey } = alg === "ES256"
    ? generateKeyPairSync("ec", { namedCurve: "P-256" })
    : generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg, use: "sig" };
  return {
    alg, kid, jwk,
    /** A JWT with `claims`, signed by this key (header overridable). */
    token(claims, header = {}) {
      const input = `${b64url(JSON.stringify({ alg, typ: "JWT", kid, ...header }))}.${b64url(JSON.stringify(claims))}`;
      const signature = alg === "ES256"
        ? sign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" })
        : sign("sha256", Buffer.from(input), privateKey);
      return `${input}.${b64url(signature)}`;
    },
  };
}

/** A token "signed" with HS256 using `secret` (the algorithm-confusion attack). */
export function hmacToken(claims, secret, kid) {
  const input = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT", kid }))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(createHmac("sha256", secret).update(input).digest())}`;
}

/** An issuer: `url` (its `iss`), the keys it publishes (`keys`, replaceable), fetch count. */
export async function startIssuer(keys) {
  const issuer = { keys, fetches: 0 };
  const server = createServer((req, res) => {
    const send = (body) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.url === "/.well-known/openid-configuration") {
      send({ issuer: issuer.url, jwks_uri: `${issuer.url}/keys`, id_token_signing_alg_values_supported: ["RS256", "ES256"] });
    } else if (req.url === "/keys") {
      issuer.fetches += 1;
      send({ keys: issuer.keys.map((k) => k.jwk) });
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  issuer.url = `http://127.0.0.1:${server.address().port}`;
  issuer.close = () => new Promise((resolve) => server.close(resolve));
  /** Claims as an identity provider puts them in an access token for the Azure SDKs. */
  issuer.claims = (roles, extra = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return { iss: issuer.url, aud: AUDIENCE, sub: "app-reports", iat: now, nbf: now, exp: now + 3600, roles, ...extra };
  };
  return issuer;
}

/** A TokenCredential handing out tokens `mint(scopes)` makes; remembers the scopes asked. */
export function credential(mint) {
  const asked = [];
  return {
    asked,
    async getToken(scopes) {
      asked.push(...[].concat(scopes));
      return { token: mint(scopes), expiresOnTimestamp: Date.now() + 3_600_000 };
    },
  };
}

/** A self-signed certificate for localhost and 127.0.0.1 (openssl), and a cleanup. */
export function selfSignedCertificate() {
  const dir = mkdtempSync(join(tmpdir(), "hubbub-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ], { stdio: "ignore" });
  return { cert, key, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
