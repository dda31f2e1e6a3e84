// Command line around pospal-verify.mjs, for tests, CI and bench/ (no dependencies beyond Node).
//
//   node cli.mjs vectors FILE            README's test vectors: one "name<TAB>verdict" line per case
//   node cli.mjs verify OPTIONS          ask the agent once: {"verdict", "licensed", "kids", "elapsed_ms"}
//   node cli.mjs bench OPTIONS [N]       N re-challenged verified calls, then N reused ones: p50/p99 (ms)
//
// OPTIONS: --port P --trusted JWKS_FILE --this-pc HASHES_FILE [--timeout-ms T]

import fs from "node:fs";
import { AgentClient, AnswerRefused, LocalApiError, verifyLocalAnswer } from "./pospal-verify.mjs";

function verdictOf(fn) {
  try {
    return fn().status.licensed ? "licensed" : "not_licensed";
  } catch (err) {
    if (err instanceof AnswerRefused) return err.code;
    throw err;
  }
}

function vectors(file) {
  const doc = JSON.parse(fs.readFileSync(file, "utf8"));
  const base = { now: doc.now, challenge: doc.challenge, answer: doc.answer, this_pc: doc.this_pc };
  const cases = [["genuine", base, doc.verdict]];
  for (const v of doc.variants) {
    const c = { ...base };
    for (const k of ["now", "challenge", "this_pc"]) if (k in v) c[k] = v[k];
    c.answer = { ...(v.answer || base.answer), ...(v.answer_changes || {}) };
    cases.push([v.name, c, v.verdict]);
  }
  for (const [name, c] of cases) {
    const got = verdictOf(() => verifyLocalAnswer(c.challenge, c.answer, { trustedKeys: doc.trusted_keys, thisPc: c.this_pc, now: c.now }));
    console.log(`${name}\t${got}`);
  }
}

function options(args) {
  const opt = {};
  for (let i = 0; i < args.length; i += 2) opt[args[i].replace(/^--/, "")] = args[i + 1];
  return opt;
}

function client(opt) {
  return new AgentClient({
    port: Number(opt.port),
    trustedKeys: JSON.parse(fs.readFileSync(opt.trusted, "utf8")),
    thisPc: JSON.parse(fs.readFileSync(opt["this-pc"], "utf8")),
    timeoutMs: Number(opt["timeout-ms"] || 2000),
  });
}

async function verify(opt) {
  const agent = client(opt);
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  try {
    const status = await agent.verifiedLicense();
    const verdict = status.licensed ? "licensed" : "not_licensed";
    console.log(JSON.stringify({ verdict, licensed: status.licensed, kids: agent.trusted.kids(), elapsed_ms: elapsed() }));
  } catch (err) {
    if (!(err instanceof LocalApiError)) throw err;
    console.log(JSON.stringify({ verdict: err.code, message: err.message, kids: agent.trusted.kids(), elapsed_ms: elapsed() }));
  } finally {
    agent.close();
  }
}

function percentiles(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50_ms: at(0.5), p99_ms: at(0.99) };
}

async function bench(opt, n) {
  const agent = client(opt);
  try {
    await agent.verifiedLicense();
    const fresh = [];
    for (let i = 0; i < n; i++) {
      agent.forgetVerified();
      const t = performance.now();
      await agent.verifiedLicense();
      fresh.push(performance.now() - t);
    }
    const reused = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await agent.verifiedLicense();
      reused.push(performance.now() - t);
    }
    console.log(JSON.stringify({ n, rechallenged: percentiles(fresh), reused: percentiles(reused) }));
  } finally {
    agent.close();
  }
}

const [command, ...rest] = process.argv.slice(2);
if (command === "vectors") vectors(rest[0]);
else if (command === "verify") await verify(options(rest));
else if (command === "bench") {
  const n = rest.length % 2 === 1 ? Number(rest.pop()) : 1000;
  await bench(options(rest), n);
} else {
  console.error("usage: node cli.mjs vectors FILE | verify OPTIONS | bench OPTIONS [N]");
  process.exit(2);
}
