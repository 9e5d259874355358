import { useState } from "react";
import { ApiError, call, nsPath, type Json } from "../api";
import { Diff, Problem, useLive } from "./common";
import { useUsage } from "./Usage";

function Template({ ns, t, reload, usage }: { ns: string; t: Json; reload: () => void; usage: Json | null }) {
  const base = `${nsPath(ns)}/prompts/${encodeURIComponent(t.name)}`;
  const names: string[] = t.versions.map((v: Json) => v.version);
  const [from, setFrom] = useState(names[0]);
  const [to, setTo] = useState(names[names.length - 1]);
  const [diff, setDiff] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [pending, setPending] = useState<{ label: string; run: () => Promise<unknown> } | null>(null);
  const [version, setVersion] = useState("");
  const [template, setTemplate] = useState("");
  const [canary, setCanary] = useState(names[names.length - 1]);
  const [weight, setWeight] = useState(10);

  const [running, setRunning] = useState(false);
  const act = (label: string, run: () => Promise<unknown>) => setPending({ label, run });
  const confirm = async () => {
    if (!pending || running) return; // one click, one change
    setRunning(true);
    setError(null);
    try {
      await pending.run();
      reload();
    } catch (e) {
      setError(e as ApiError);
    }
    setPending(null);
    setRunning(false);
  };

  return (
    <article className="card" aria-labelledby={`t-${t.name}`} data-template={t.name}>
      <h3 id={`t-${t.name}`}>
        {t.name}
        {t.argoManaged && <span className="tag">Argo CD: {t.argoManaged}</span>}
      </h3>
      <p aria-label="Serving">
        Serving: {t.serving.map((s: Json) => `${s.version} ${s.weight}%`).join(" · ")}
      </p>
      <table>
        <thead>
          <tr>
            <th scope="col">Version</th>
            <th scope="col">Template</th>
            <th scope="col">Split</th>
            <th scope="col">Tokens in / out (1h)</th>
            <th scope="col">Requests · errors · p50 (1h)</th>
          </tr>
        </thead>
        <tbody>
          {t.versions.map((v: Json) => (
            <tr key={v.version}>
              <td>
                {v.version}
                {v.version === t.release?.stable && <span className="tag">stable</span>}
                {v.version === t.release?.canary?.version && <span className="tag">canary</span>}
              </td>
              <td>
                <code>{v.template.slice(0, 120)}</code>
              </td>
              <td>{t.serving.find((s: Json) => s.version === v.version)?.weight ?? 0}%</td>
              <td data-figures={v.version}>{figures(usage, t, v.version)}</td>
              <td data-requests={v.version}>{requestFigures(usage, t, v.version)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="row">
        <label>
          From{" "}
          <select value={from} onChange={(e) => setFrom(e.target.value)}>
            {names.map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
        <label>
          to{" "}
          <select value={to} onChange={(e) => setTo(e.target.value)}>
            {names.map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
        <button onClick={() => call<Json>("GET", `${base}/diff?from=${from}&to=${to}`).then((d) => setDiff(d.diff), setError)}>Compare</button>
      </div>
      {diff !== null && <Diff text={diff} />}
      <form
        className="row"
        aria-label={`New version of ${t.name}`}
        onSubmit={(e) => {
          e.preventDefault();
          act(`Create version ${version}`, () => call("POST", `${base}/versions`, { version, template }));
        }}
      >
        <label>
          New version <input value={version} onChange={(e) => setVersion(e.target.value)} required />
        </label>
        <label>
          Template <textarea value={template} onChange={(e) => setTemplate(e.target.value)} required rows={2} />
        </label>
        <button type="submit">Create version</button>
      </form>
      <div className="row">
        <label>
          Canary{" "}
          <select value={canary} onChange={(e) => setCanary(e.target.value)}>
            {names.map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
        <label>
          Weight % <input type="number" min={0} max={100} value={weight} onChange={(e) => setWeight(Number(e.target.value))} />
        </label>
        <button onClick={() => act(`Send ${weight}% to ${canary}`, () => call("POST", `${base}/canary`, { version: canary, weight }))}>Set canary</button>
        <button disabled={!t.release?.canary} onClick={() => act(`Promote ${t.release?.canary?.version} to stable`, () => call("POST", `${base}/promote`, {}))}>
          Promote canary
        </button>
        <button
          onClick={() =>
            act(t.release?.canary ? `Drop the canary ${t.release.canary.version}` : "Roll stable back", () =>
              call("POST", `${base}/rollback`, {}),
            )
          }
        >
          Roll back
        </button>
      </div>
      {pending && (
        <div
          role="alertdialog"
          aria-label="Confirm"
          className="notice"
          onKeyDown={(e) => e.key === "Escape" && !running && setPending(null)}
        >
          <p>{pending.label}?</p>
          <button onClick={confirm} disabled={running} autoFocus>
            Confirm
          </button>{" "}
          <button onClick={() => setPending(null)} disabled={running}>
            Cancel
          </button>
        </div>
      )}
      <Problem error={error} />
    </article>
  );
}

/** Tokens a version spent across the agents using the template (from Prometheus). */
function figures(usage: Json | null, t: Json, version: string): string {
  if (!usage) return "—";
  const users: string[] = (t.status?.usedBy ?? []).map((u: string) => u.split("/").pop());
  const rows = usage.rows.filter((r: Json) => r.promptVersion === version && (users.length === 0 || users.includes(r.agent)));
  const sum = (k: string) => rows.reduce((n: number, r: Json) => n + r[k], 0);
  return `${sum("input")} / ${sum("output")}`;
}

/** Requests, errors and median latency of a version across the template's agents. */
function requestFigures(usage: Json | null, t: Json, version: string): string {
  if (!usage) return "—";
  const users: string[] = (t.status?.usedBy ?? []).map((u: string) => u.split("/").pop());
  const rows = (usage.versions ?? []).filter(
    (r: Json) => r.promptVersion === version && (users.length === 0 || users.includes(r.agent)),
  );
  const requests = rows.reduce((n: number, r: Json) => n + r.requests, 0);
  const errors = rows.reduce((n: number, r: Json) => n + r.errors, 0);
  const p50 = rows.map((r: Json) => r.p50Ms).filter((x: unknown) => typeof x === "number");
  return `${requests} · ${errors} · ${p50.length ? `${Math.max(...p50)} ms` : "—"}`;
}

export function Prompts({ ns }: { ns: string }) {
  const [data, error, reload] = useLive<{ items: Json[] }>(ns, `${nsPath(ns)}/prompts`);
  const [usage] = useUsage(ns, "1h");
  return (
    <section aria-labelledby="prompts-title">
      <h2 id="prompts-title">Prompt center</h2>
      <p className="help">
        Versions are immutable. Each version's tokens, requests, errors and median latency come from Prometheus (last hour): the
        A/B comparison of a canary.
      </p>
      <Problem error={error} />
      {data?.items.map((t) => <Template key={`${t.name}:${t.versions.length}:${JSON.stringify(t.release)}`} ns={ns} t={t} reload={reload} usage={usage} />)}
    </section>
  );
}
