// Runs the official JavaScript Key Vault client against kvemulator, through
// ManagedIdentityCredential and the emulator's App Service style identity
// endpoint. The environment comes from kvemulator's env file, plus
// CACHE_CLIENT_ID and ADMIN_CLIENT_ID. Prints one line per step; exits 1 on
// the first failure.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { ManagedIdentityCredential } from "@azure/identity";
import { KeyClient, CryptographyClient } from "@azure/keyvault-keys";

const env = process.env;
const url = env.KEYVAULT_URL;
const keyId = env.KEYVAULT_KEY_CMK;
// The emulator is reached by address: its challenge names the public
// cloud's resource, which the client would otherwise refuse.
const options = { disableChallengeResourceVerification: true, retryOptions: { maxRetries: 0 } };
const cache = new ManagedIdentityCredential({ clientId: env.CACHE_CLIENT_ID });
const admin = new ManagedIdentityCredential({ clientId: env.ADMIN_CLIENT_ID });
const keys = new KeyClient(url, cache, options);
const adminKeys = new KeyClient(url, admin, options);

function step(name) { console.log("ok " + name); }

async function refused(promise, status, code) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.statusCode, status, String(e));
    if (code) assert.match(String(e.message) + " " + String(e.code), new RegExp(code));
    return;
  }
  assert.fail("expected HTTP " + status);
}

const key = await keys.getKey("cmk");
assert.equal(key.keyType, "RSA");
assert.equal(key.key.n.length, 384, "RSA 3072");
const v1 = key.properties.version;
step("get key " + key.id);

const dek = randomBytes(32);
const wrapped = {};
for (const alg of ["RSA-OAEP", "RSA-OAEP-256"]) {
  const crypto = new CryptographyClient(keyId, cache, options);
  const w = await crypto.wrapKey(alg, dek);
  assert.equal(w.keyID, key.id, "wrapped under the current version");
  const u = await crypto.unwrapKey(alg, w.result);
  assert.deepEqual(Buffer.from(u.result), dek);
  wrapped[alg] = w;
  step("wrap and unwrap " + alg);
}

// Rotation: the versionless key follows the new version; the old version
// still unwraps what it wrapped.
const rotated = await adminKeys.rotateKey("cmk");
assert.notEqual(rotated.properties.version, v1);
assert.equal(rotated.key.n.length, 384, "rotation keeps RSA 3072");
const follow = new CryptographyClient(keyId, cache, options);
const w2 = await follow.wrapKey("RSA-OAEP-256", dek);
assert.equal(w2.keyID, rotated.id, "wraps follow the rotated version");
const old = new CryptographyClient(wrapped["RSA-OAEP-256"].keyID, cache, options);
assert.deepEqual(Buffer.from((await old.unwrapKey("RSA-OAEP-256", wrapped["RSA-OAEP-256"].result)).result), dek);
assert.deepEqual(Buffer.from((await follow.unwrapKey("RSA-OAEP-256", w2.result)).result), dek);
step("rotated key followed");

// A disabled key is refused: reading it, and unwrapping with it.
await adminKeys.updateKeyProperties("cmk", rotated.properties.version, { enabled: false });
await refused(keys.getKey("cmk"), 403, "disabled");
const pinned = new CryptographyClient(rotated.id, cache, options);
await refused(pinned.unwrapKey("RSA-OAEP-256", w2.result), 403, "disabled");
step("disabled key refused");

// The cache identity has no right to change the key.
await refused(keys.updateKeyProperties("cmk", rotated.properties.version, { enabled: true }), 403, "ForbiddenByRbac|not authorized");
step("permissions enforced");
