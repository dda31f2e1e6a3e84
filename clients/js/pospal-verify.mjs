// pospal-verify: verify the POSPal License Agent's answer from a POS written in JavaScript (Node 18+).
//
// The same checks as pospal-client (Python) and README's "Verifying from another language", with
// nothing but Node's standard `crypto` and `http`:
//
//   1. the token (compact JWS) verifies against the POS's own trusted keys, which follow a key rotation
//      only through key-set documents signed by the offline key-set authority named in its anchors
//      (`keyset_authority`, threshold; revoked kids leave for good; `TrustedKeys.applyChain`);
//   2. `machine_key`'s RFC 7638 thumbprint is the token's `cnf.jkt`, and `proof` is its Ed25519 signature
//      over "pospal-local-answer/v1\n" + challenge + "\n" + hex SHA-256 of the RFC 8785 canonical answer
//      without `proof` (a fake, replayed or edited answer fails here);
//   3. the token's fingerprint proves this PC (`provesSameMachine`: at least min(3, bound) components
//      compared, no strict majority different; a relay from another OS compares nothing and fails);
//   4. by this PC's clock the lease has not run out and the answer is no more licensed than the token.
//
// Errors carry `code`: bad_proof, other_machine, license_expired (all refusals), agent_unavailable,
// agent_starting. Every call has one total deadline and answers over 256 KiB are refused. Within that
// deadline a call is retried transparently on `503 busy` (a connection flood) and `503 updating` (an
// update swapping versions), after the Retry-After asked for, and on a fresh connection refused or reset
// while an agent that answered before swaps versions; a retry that cannot finish in time is not started
// (`Budget`), and the caller gets the last error. `503 starting` is not retried (canSell's own rule).

import crypto from "node:crypto";
import http from "node:http";

export const MAX_ANSWER_BYTES = 256 * 1024;
export const MIN_COMPARED = 3;
const MAX_TOKEN_BYTES = 16 * 1024;
const MAX_CHAIN = 64;
const MAX_KEYSET_BYTES = 64 * 1024;
const PROOF_CONTEXT = "pospal-local-answer/v1";
const PROOF_FIELDS = new Set(["token", "machine_key", "proof", "keyset_updates"]);
const REQUIRED_CLAIMS = ["iss", "aud", "sub", "kind", "mid", "fp", "status", "iat", "nbf", "exp", "srv", "policy"];
const HEADER_KEYS = new Set(["alg", "typ", "kid"]);

// -- errors --------------------------------------------------------------------------------------------

export class LocalApiError extends Error {
  constructor(message, code = "local_api_error", status = 0) {
    super(message);
    this.code = code;
    this.status = status;
  }
}
export class AgentUnavailable extends LocalApiError {
  constructor(message = "The POSPal License Agent is not running.") {
    super(message, "agent_unavailable");
  }
}
export class AgentStarting extends AgentUnavailable {
  constructor(message = "The POSPal License Agent is starting.") {
    super(message);
    this.code = "agent_starting";
  }
}
export class AnswerRefused extends LocalApiError {
  constructor(code, reason, message) {
    super(message, code);
    this.reason = reason;
  }
}
export class BadProof extends AnswerRefused {
  constructor(reason, message) {
    super("bad_proof", reason, message);
  }
}
export class OtherMachine extends AnswerRefused {
  constructor(reason, message) {
    super("other_machine", reason, message);
  }
}
export class LicenseExpired extends AnswerRefused {
  constructor(reason, message) {
    super("license_expired", reason, message);
  }
}

// -- encodings -----------------------------------------------------------------------------------------

export function b64urlEncode(buf) {
  return Buffer.from(buf).toString("base64url");
}

// Canonical unpadded base64url only: anything that does not re-encode to itself is refused.
function b64urlDecodeStrict(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  const raw = Buffer.from(text, "base64url");
  return raw.toString("base64url") === text ? raw : null;
}

// Lenient like the agent's decode_public_key: padding and the standard alphabet are accepted.
function b64urlDecodeLenient(text) {
  if (typeof text !== "string") return null;
  const s = text.trim().replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return null;
  return Buffer.from(s, "base64url");
}

function compareCodePoints(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

// RFC 8785 canonical JSON for the values an answer holds: objects, arrays, strings, integers, booleans,
// null; keys sorted (by code point, as the agent sorts them), no whitespace. Non-integers are refused.
export function canonicalJson(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error("canonical JSON holds integers only");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort(compareCodePoints);
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJson(value[k])).join(",") + "}";
  }
  throw new Error(`canonical JSON cannot hold a ${typeof value}`);
}

function publicKeyFromRaw(raw) {
  if (!raw || raw.length !== 32) return null;
  try {
    return crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64urlEncode(raw) }, format: "jwk" });
  } catch {
    return null;
  }
}

export function kidFor(raw) {
  return crypto.createHash("sha256").update(raw).digest("hex").slice(0, 16);
}

export function jwkThumbprint(machineKey) {
  const raw = b64urlDecodeLenient(machineKey);
  if (!raw || raw.length !== 32) return null;
  const canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + b64urlEncode(raw) + '"}';
  return b64urlEncode(crypto.createHash("sha256").update(canonical, "ascii").digest());
}

function ed25519Verify(key, message, signature) {
  try {
    return crypto.verify(null, message, key, signature);
  } catch {
    return false;
  }
}

// -- trusted keys --------------------------------------------------------------------------------------

function keyFromJwk(jwk) {
  if (!jwk || typeof jwk !== "object" || jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || "d" in jwk) return null;
  const raw = b64urlDecodeLenient(jwk.x);
  const key = publicKeyFromRaw(raw);
  if (!key) return null;
  const kid = kidFor(raw);
  if ("kid" in jwk && jwk.kid !== kid) return null;
  return { kid, key };
}

// The offline key-set authority ({threshold, keys}) that alone may sign key-set documents.
function authorityFrom(doc) {
  if (doc === undefined || doc === null) return null;
  if (typeof doc !== "object" || !Array.isArray(doc.keys)) throw new Error("keyset_authority has a 'keys' list");
  const threshold = doc.threshold === undefined ? 1 : doc.threshold;
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > doc.keys.length) {
    throw new Error("keyset_authority threshold is between 1 and its number of keys");
  }
  const keys = new Map();
  for (const jwk of doc.keys) {
    const parsed = keyFromJwk(jwk);
    if (!parsed) throw new Error("not an Ed25519 public JWK");
    keys.set(parsed.kid, parsed.key);
  }
  return { threshold, keys };
}

export class TrustedKeys {
  constructor() {
    this.keys = new Map(); // what tokens may be signed by: roots and the document's keys, minus revoked
    this.roots = new Map();
    this.learned = new Map();
    this.revoked = new Set();
    this.authority = null;
    this.keysetVersion = 0;
    this.acceptedUpdates = [];
  }

  static fromJwks(doc) {
    const trusted = new TrustedKeys();
    if (!doc || !Array.isArray(doc.keys)) throw new Error("a JWKS document has a 'keys' list");
    for (const jwk of doc.keys) {
      const parsed = keyFromJwk(jwk);
      if (!parsed) throw new Error("not an Ed25519 public JWK");
      trusted.roots.set(parsed.kid, parsed.key);
    }
    trusted.authority = authorityFrom(doc.keyset_authority);
    trusted.rebuild();
    return trusted;
  }

  rebuild() {
    this.keys = new Map([...this.roots, ...this.learned].filter(([kid]) => !this.revoked.has(kid)));
  }

  kids() {
    return [...this.keys.keys()].sort();
  }

  // A key-set document (JWS general JSON) signed by the authority's threshold of distinct keys: its
  // payload, or throws. A token key's signature counts for nothing (pospal_protocol/trust.py, the same rule).
  verifyKeyset(doc) {
    const bad = () => new BadProof("keyset", "Key update rejected: not signed by the key-set authority.");
    if (!this.authority || typeof doc !== "string" || doc.length > MAX_KEYSET_BYTES) throw bad();
    let outer;
    try {
      outer = JSON.parse(doc);
    } catch {
      throw bad();
    }
    if (!outer || typeof outer.payload !== "string" || !Array.isArray(outer.signatures)) throw bad();
    const signers = new Set();
    for (const entry of outer.signatures.slice(0, 2 * this.authority.keys.size + 2)) {
      if (!entry || typeof entry.protected !== "string" || typeof entry.signature !== "string") continue;
      let header;
      try {
        header = JSON.parse(b64urlDecodeLenient(entry.protected).toString("utf8"));
      } catch {
        continue;
      }
      if (!header || Object.keys(header).sort().join(",") !== "alg,kid,typ") continue;
      if (header.alg !== "EdDSA" || header.typ !== "pospal-keyset+jwt") continue;
      const key = this.authority.keys.get(header.kid);
      const signature = b64urlDecodeLenient(entry.signature);
      if (!key || !signature || signature.length !== 64) continue;
      if (ed25519Verify(key, Buffer.from(`${entry.protected}.${outer.payload}`, "ascii"), signature)) {
        signers.add(header.kid);
      }
    }
    if (signers.size < this.authority.threshold) throw bad();
    let payload;
    try {
      payload = JSON.parse(b64urlDecodeLenient(outer.payload).toString("utf8"));
    } catch {
      throw bad();
    }
    const revoked = payload && payload.revoked === undefined ? [] : payload && payload.revoked;
    if (
      !payload || payload.iss !== "pospal" || !Number.isInteger(payload.iat) || !Number.isInteger(payload.version) ||
      payload.version < 1 || !Array.isArray(payload.keys) || !Array.isArray(revoked) ||
      revoked.some((k) => typeof k !== "string")
    ) {
      throw new BadProof("keyset", "Key update rejected: malformed document.");
    }
    const parsed = payload.keys.map(keyFromJwk);
    if (parsed.some((p) => p === null)) throw new BadProof("keyset", "Key update rejected: malformed key.");
    return { version: payload.version, keys: parsed, revoked };
  }

  // The newest authority document wins: its keys join the roots, its revoked kids leave for good; an
  // older version is refused (rollback). Returns the kids that became trusted, or throws.
  applyKeysetUpdate(doc) {
    const { version, keys, revoked } = this.verifyKeyset(doc);
    if (version < this.keysetVersion) throw new BadProof("keyset", "Key update rejected: older than the one held.");
    if (version === this.keysetVersion) return [];
    const before = new Set(this.keys.keys());
    this.learned = new Map(keys.map((p) => [p.kid, p.key]));
    for (const kid of revoked) this.revoked.add(kid);
    this.keysetVersion = version;
    this.acceptedUpdates = [doc];
    this.rebuild();
    return this.kids().filter((kid) => !before.has(kid));
  }

  // Of the documents given, the newest that verifies is applied; the rest are skipped.
  applyChain(docs) {
    let best = null;
    for (const doc of (Array.isArray(docs) ? docs : []).filter((d) => typeof d === "string").slice(0, MAX_CHAIN)) {
      try {
        const { version } = this.verifyKeyset(doc);
        if (!best || version > best.version) best = { version, doc };
      } catch {
        continue;
      }
    }
    if (!best || best.version <= this.keysetVersion) return [];
    return this.applyKeysetUpdate(best.doc);
  }
}

export function verifyJws(token, trusted, expectedTyp) {
  const bad = (reason, message) => new BadProof("token", message || `The agent's token is not genuine (${reason}).`);
  if (typeof token !== "string" || token.length > MAX_TOKEN_BYTES || !/^[\x21-\x7e]*$/.test(token)) throw bad("format");
  const parts = token.split(".");
  if (parts.length !== 3) throw bad("format");
  const [h, p, s] = parts.map(b64urlDecodeStrict);
  if (!h || !p || !s) throw bad("format");
  let header, payload;
  try {
    header = JSON.parse(h.toString("utf8"));
  } catch {
    throw bad("format");
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) throw bad("header");
  if (!Object.keys(header).every((k) => HEADER_KEYS.has(k))) throw bad("header");
  if (header.alg !== "EdDSA") throw bad("alg");
  if (header.typ !== expectedTyp) throw bad("typ");
  const key = typeof header.kid === "string" ? trusted.keys.get(header.kid) : undefined;
  if (!key) throw bad("kid", "The agent's token is signed by a key this POS does not trust.");
  if (s.length !== 64 || !ed25519Verify(key, Buffer.from(parts[0] + "." + parts[1], "ascii"), s)) throw bad("signature");
  try {
    payload = JSON.parse(p.toString("utf8"));
  } catch {
    throw bad("format");
  }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) throw bad("format");
  return { header, payload };
}

// -- the rules -----------------------------------------------------------------------------------------

function checkClaims(c) {
  const bad = () => new BadProof("token", "The agent's token has malformed claims.");
  if (!REQUIRED_CLAIMS.every((k) => k in c)) throw bad();
  if (c.iss !== "pospal" || c.aud !== "pospal-agent") throw bad();
  if (!["license", "trial"].includes(c.kind) || !["trialing", "active", "past_due", "canceled", "revoked"].includes(c.status)) throw bad();
  if (!c.fp || typeof c.fp !== "object" || Array.isArray(c.fp) || !Object.values(c.fp).every((v) => typeof v === "string")) throw bad();
  for (const k of ["iat", "nbf", "exp", "srv"]) if (!Number.isInteger(c[k])) throw bad();
  for (const k of ["period_end", "payment_grace_end", "cancel_at", "trial_end"]) if (c[k] != null && !Number.isInteger(c[k])) throw bad();
  if (c.exp < c.iat) throw bad();
  return c;
}

// At least min(3, bound) components read on both sides, and no strict majority of them different.
export function provesSameMachine(bound, current) {
  const both = Object.keys(bound).filter((name) => current[name]);
  const matched = both.filter((name) => current[name] === bound[name]).length;
  const differ = both.length - matched;
  const required = Math.min(MIN_COMPARED, Object.keys(bound).length);
  const decided = required > 0 && both.length >= required;
  return decided && !(2 * differ > both.length);
}

// The state in which the token by itself takes no orders at `now` (Unix seconds), or null.
export function whyNotLicensed(c, now) {
  if (c.status === "revoked") return "revoked";
  if (now >= c.exp) return "offline_expired";
  if (c.kind === "trial") {
    const end = c.trial_end ?? c.exp;
    return c.status === "canceled" || now >= end ? "trial_expired" : null;
  }
  if (c.status === "canceled" || (c.cancel_at != null && now >= c.cancel_at)) return "licensed_cancelled";
  if (c.status === "past_due") {
    const payEnd = c.payment_grace_end ?? c.iat + ((c.policy && c.policy.payment_grace_s) ?? 604800);
    if (now >= payEnd) return "licensed_renewal_required";
  }
  return null;
}

function nextChange(c, now) {
  const graceS = (c.policy && c.policy.grace_s) ?? 172800;
  const times = [c.exp, c.trial_end, c.payment_grace_end, c.cancel_at, c.period_end, c.srv + graceS];
  const future = times.filter((t) => t != null && t > now);
  return future.length ? Math.min(...future) : now;
}

// A verified token's claims, per trusted set: the agent's token changes at each sync, not per call.
const claimsCache = new WeakMap();

function tokenClaims(token, chain, trusted) {
  const cached = claimsCache.get(trusted);
  if (cached && cached.token === token) return cached.claims;
  if (Array.isArray(chain) && chain.length) trusted.applyChain(chain);
  const claims = checkClaims(verifyJws(token, trusted, "JWT").payload);
  claimsCache.set(trusted, { token, claims });
  return claims;
}

let lastMachineKey = { text: null, key: null };

function machineKey(text) {
  if (lastMachineKey.text !== text) {
    lastMachineKey = { text, key: publicKeyFromRaw(b64urlDecodeLenient(text || "")) };
  }
  return lastMachineKey.key;
}

export function answerDigest(answer) {
  const body = Object.fromEntries(Object.entries(answer).filter(([k]) => k !== "proof"));
  return crypto.createHash("sha256").update(canonicalJson(body), "utf8").digest("hex");
}

// The checks on one answer in hand. Returns { status, changesAt }, or throws an AnswerRefused.
export function verifyLocalAnswer(challenge, answer, { trustedKeys, thisPc, now }) {
  const trusted = trustedKeys instanceof TrustedKeys ? trustedKeys : TrustedKeys.fromJwks(trustedKeys);
  const status = Object.fromEntries(Object.entries(answer).filter(([k]) => !PROOF_FIELDS.has(k)));
  if (typeof answer.token !== "string") {
    if (answer.licensed === false) return { status, changesAt: now };
    throw new BadProof("no_token", "The answer says licensed but carries no token to prove it.");
  }
  const claims = tokenClaims(answer.token, answer.keyset_updates, trusted);
  const jkt = claims.cnf && typeof claims.cnf === "object" ? claims.cnf.jkt : undefined;
  if (typeof jkt !== "string") throw new BadProof("unbound", "The agent's token names no machine key.");
  const key = machineKey(answer.machine_key);
  if (!key) throw new BadProof("key", "The answer carries no valid machine key.");
  if (jwkThumbprint(answer.machine_key) !== jkt) throw new BadProof("key", "The answer is signed by a key its token does not name.");
  const proof = typeof answer.proof === "string" ? b64urlDecodeStrict(answer.proof) : null;
  let digest;
  try {
    digest = answerDigest(answer);
  } catch {
    digest = null;
  }
  const message = Buffer.from(`${PROOF_CONTEXT}\n${challenge}\n${digest}`, "utf8");
  if (!proof || proof.length !== 64 || digest === null || !/^[\x00-\x7f]*$/.test(challenge) || !ed25519Verify(key, message, proof)) {
    throw new BadProof("proof", "The answer is not signed for this request (forged or replayed).");
  }
  if (answer.machine_id != null && answer.machine_id !== claims.mid) throw new BadProof("mismatch", "The answer names another machine than its token.");
  if (!provesSameMachine(claims.fp, thisPc)) throw new OtherMachine("fingerprint", "The agent's license belongs to another computer.");
  if (claims.exp <= now) throw new LicenseExpired("offline_expired", "The license token has expired.");
  const refusal = whyNotLicensed(claims, now);
  if (answer.licensed === true && refusal !== null) {
    if (refusal === "revoked") throw new BadProof("contradicts", "The answer says licensed but its token is revoked.");
    throw new LicenseExpired(refusal, "The license has run out by this computer's clock.");
  }
  return { status, changesAt: nextChange(claims, now) };
}

// -- the client ----------------------------------------------------------------------------------------

// One GET under a total deadline (connect, send, every read) with the size cap.
function get(host, port, path, timeoutMs, agent) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (fn, value) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        fn(value);
      }
    };
    const req = http.request(
      { host, port, path, method: "GET", agent, headers: { Host: `${host}:${port}`, Accept: "application/json" } },
      (res) => {
        const announced = Number(res.headers["content-length"]);
        if (announced > MAX_ANSWER_BYTES) {
          req.destroy();
          return done(reject, new BadProof("too_large", "The answer is larger than any genuine agent's."));
        }
        const chunks = [];
        let size = 0;
        res.on("data", (chunk) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) {
            req.destroy();
            return done(reject, new BadProof("too_large", "The answer is larger than any genuine agent's."));
          }
          chunks.push(chunk);
        });
        res.on("end", () => done(resolve, { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", (err) => done(reject, new AgentUnavailable(`The POSPal License Agent failed: ${err.message}`)));
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      done(reject, new AgentUnavailable("The POSPal License Agent did not answer in time."));
    }, timeoutMs);
    req.on("error", (err) => {
      const failure = new AgentUnavailable();
      // What a retry needs to know: refused (never sent), or reset/closed on a fresh or reused socket.
      failure.cause = err && err.code;
      failure.reused = Boolean(req.reusedSocket);
      done(reject, failure);
    });
    req.end();
  });
}

// -- retries inside the deadline -----------------------------------------------------------------------

export const RETRY_CODES = new Set(["busy", "updating"]);
export const MIN_WAIT_MS = 50; // a Retry-After of 0 must not turn into a hot loop
export const DEFAULT_WAIT_MS = 250; // a 503 busy/updating without Retry-After
export const MIN_ATTEMPT_MS = 50; // what one more exchange on loopback needs, at the least
export const MAX_ATTEMPTS = 64;
const GAP_FIRST_MS = 50;
const GAP_MAX_MS = 400;

// The attempts of one call before `deadline` (ms on `clock()`). begin() before each attempt; after a
// retriable failure, retry(waitMs) sleeps and resolves true when one more attempt (as long as the last,
// at least MIN_ATTEMPT_MS) still fits before the deadline, else resolves false at once without sleeping.
export class Budget {
  constructor(deadline, clock = () => performance.now(), sleep = (ms) => new Promise((r) => setTimeout(r, ms))) {
    this.deadline = deadline;
    this.clock = clock;
    this.sleep = sleep;
    this.attempts = 0;
    this.started = 0;
    this.gap = GAP_FIRST_MS;
  }

  begin() {
    this.attempts += 1;
    this.started = this.clock();
  }

  async retry(waitMs) {
    if (this.attempts >= MAX_ATTEMPTS) return false;
    const now = this.clock();
    const wait = Math.max(waitMs, MIN_WAIT_MS);
    if (now + wait + Math.max(MIN_ATTEMPT_MS, now - this.started) > this.deadline) return false;
    await this.sleep(wait);
    return true;
  }

  retryGap() {
    const wait = this.gap;
    this.gap = Math.min(this.gap * 2, GAP_MAX_MS);
    return this.retry(wait);
  }
}

// The milliseconds a 503 asks to wait: Retry-After (seconds), else the body's retry_after, else 250 ms.
export function retryAfterMs(headers, body) {
  const text = String((headers && headers["retry-after"]) || "").trim();
  if (/^[0-9]{1,6}$/.test(text)) return Number(text) * 1000;
  const value = body && body.retry_after;
  if (typeof value === "number" && Number.isFinite(value) && value >= 0 && value < 1e6) return value * 1000;
  return DEFAULT_WAIT_MS;
}

export class AgentClient {
  // trustedKeys: the POS's JWKS (or a TrustedKeys); thisPc: this PC's fingerprint hashes
  // (`pospal-agent fingerprint --json`, names to hashes). Optional: port, host, timeoutMs, recheckMs,
  // startingLimitMs, now (() => Unix seconds), onLearned (kids, acceptedUpdates) to persist a rotation.
  // clockMs and sleepMs (tests) replace performance.now and setTimeout for the retries' budget.
  constructor({ trustedKeys, thisPc, port, host = "127.0.0.1", timeoutMs = 2000, recheckMs = 60000, startingLimitMs = 60000, now, onLearned, clockMs, sleepMs } = {}) {
    this.trusted = trustedKeys instanceof TrustedKeys ? trustedKeys : TrustedKeys.fromJwks(trustedKeys);
    this.thisPc = thisPc || {};
    this.port = port ?? Number(process.env.POSPAL_AGENT_PORT || 7421);
    this.host = host;
    this.timeoutMs = timeoutMs;
    this.recheckMs = recheckMs;
    this.startingLimitMs = startingLimitMs;
    this.now = now || (() => Date.now() / 1000);
    this.onLearned = onLearned;
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    this.verified = null;
    this.lastProven = null;
    this.startingSince = null;
    this.provenOnce = false;
    this.clockMs = clockMs || (() => performance.now());
    this.sleepMs = sleepMs || ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.reached = false; // the agent answered the last exchange: a refused connection now is a swap
  }

  // One GET with its retries (busy, updating, a swap's refused or reset connection) inside one deadline.
  async getWithRetries(path) {
    const budget = new Budget(this.clockMs() + this.timeoutMs, this.clockMs, this.sleepMs);
    for (;;) {
      budget.begin();
      let res;
      try {
        res = await get(this.host, this.port, path, Math.max(1, budget.deadline - this.clockMs()), this.httpAgent);
      } catch (err) {
        const swapped = err instanceof AgentUnavailable && ["ECONNREFUSED", "ECONNRESET", "EPIPE"].includes(err.cause);
        if (swapped && (err.reused || this.reached) && (await budget.retryGap())) continue;
        if (swapped) this.reached = false;
        throw err;
      }
      this.reached = true;
      if (res.status === 503) {
        let data = null;
        try {
          data = JSON.parse(res.body.toString("utf8"));
        } catch {
          data = null;
        }
        if (data && RETRY_CODES.has(data.error) && (await budget.retry(retryAfterMs(res.headers, data)))) continue;
      }
      return res;
    }
  }

  async verifiedLicense() {
    const cached = this.verified;
    if (cached && performance.now() < cached.recheckAt && this.now() < cached.changesAt) return { ...cached.status };
    const challenge = b64urlEncode(crypto.randomBytes(32));
    const res = await this.getWithRetries(`/v1/license?challenge=${challenge}`);
    let data;
    try {
      data = res.body.length ? JSON.parse(res.body.toString("utf8")) : {};
    } catch {
      throw new LocalApiError("The agent sent an answer that is not JSON.", "local_api_error", res.status);
    }
    if (res.status >= 400) {
      if (data && data.error === "starting") {
        if (this.startingSince === null) this.startingSince = performance.now();
        throw new AgentStarting();
      }
      throw new LocalApiError((data && data.message) || `The agent answered HTTP ${res.status}.`, (data && data.error) || "local_api_error", res.status);
    }
    const before = this.trusted.kids().length;
    const { status, changesAt } = verifyLocalAnswer(challenge, data, { trustedKeys: this.trusted, thisPc: this.thisPc, now: this.now() });
    if (this.trusted.kids().length !== before && this.onLearned) this.onLearned(this.trusted.kids(), [...this.trusted.acceptedUpdates]);
    this.verified = { status, recheckAt: performance.now() + this.recheckMs, changesAt };
    this.lastProven = this.verified;
    this.provenOnce = true;
    return { ...status };
  }

  async canSell() {
    try {
      return (await this.verifiedLicense()).licensed === true;
    } catch (err) {
      if (err instanceof AnswerRefused) return false;
      const proven = this.lastProven && this.now() < this.lastProven.changesAt ? this.lastProven.status.licensed === true : null;
      if (proven !== null) return proven;
      if (err instanceof AgentStarting && !this.provenOnce && this.startingSince !== null) {
        return performance.now() - this.startingSince < this.startingLimitMs;
      }
      return false;
    }
  }

  forgetVerified() {
    this.verified = null;
  }

  close() {
    this.httpAgent.destroy();
  }
}
