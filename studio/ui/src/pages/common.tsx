import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError, call, nsPath, type Json } from "../api";

/** GET a path, again whenever the namespace's objects change (server-sent events, coalesced:
 * a burst of changes is one reload; not with ``followCluster`` false) and, with ``every``
 * (ms), on that period too (figures from Prometheus change without any object changing); a
 * response that arrives after a
 * newer request is dropped, and switching path clears what the old one showed. */
export function useLive<T = Json>(
  ns: string,
  path: string,
  every?: number,
  followCluster = true,
): [T | null, ApiError | null, () => void] {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const sequence = useRef(0);
  const load = useCallback(() => {
    const mine = ++sequence.current;
    call<T>("GET", path).then(
      (d) => {
        if (mine !== sequence.current) return;
        setData(d);
        setError(null);
      },
      (e) => mine === sequence.current && setError(e),
    );
  }, [path]);
  useEffect(() => {
    setData(null);
    setError(null);
    load();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const soon = () => {
      clearTimeout(timer);
      timer = setTimeout(load, 300);
    };
    const events = followCluster ? new EventSource(`${nsPath(ns)}/live`) : null;
    events?.addEventListener("change", soon);
    const period = every ? setInterval(load, every) : undefined;
    return () => {
      clearTimeout(timer);
      clearInterval(period);
      events?.close();
    };
  }, [ns, load, every, followCluster]);
  return [data, error, load];
}

export function Problem({ error }: { error: ApiError | null }) {
  if (!error) return null;
  const causes: Json[] = error.body?.causes ?? [];
  return (
    <div role="alert" className="error">
      <p>{error.message}</p>
      {causes.length > 0 && (
        <ul>
          {causes.map((c, i) => (
            <li key={i}>
              <code>{c.field}</code>: {c.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Badge({ ok, children }: { ok: boolean; children: React.ReactNode }) {
  return <span className={ok ? "badge ok" : "badge bad"}>{children}</span>;
}

export function Diff({ text }: { text: string }) {
  if (!text) return <p>No change.</p>;
  return (
    <pre className="diff" aria-label="Diff">
      {text.split("\n").map((line, i) => (
        <span key={i} className={line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : ""}>
          {line + "\n"}
        </span>
      ))}
    </pre>
  );
}

/** An agent's A2A card, read through the Studio (the service proxy): its skills, or why not. */
export function useCard(ns: string, name: string, enabled: boolean): [Json | null, ApiError | null] {
  const [card, setCard] = useState<Json | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    setCard(null);
    setError(null);
    if (!enabled) return;
    let live = true;
    call<Json>("GET", `${nsPath(ns)}/agents/${encodeURIComponent(name)}/card`).then(
      (c) => live && setCard(c),
      (e) => live && setError(e),
    );
    return () => {
      live = false;
    };
  }, [ns, name, enabled]);
  return [card, error];
}

export function Skills({ ns, name, ready }: { ns: string; name: string; ready: boolean }) {
  const [card, error] = useCard(ns, name, ready);
  if (!ready) return <span className="help">not ready</span>;
  if (error) return <span className="help">card unavailable: {error.message}</span>;
  if (!card) return <span className="help">…</span>;
  const skills: Json[] = card.skills ?? [];
  return (
    <ul className="skills" aria-label={`Skills of ${name}`}>
      {skills.map((s) => (
        <li key={s.id ?? s.name} data-skill={s.name}>
          <strong>{s.name}</strong>
          {s.description && <>: {s.description}</>}
          {(s.tags ?? []).length > 0 && <small> (tags: {s.tags.join(", ")})</small>}
        </li>
      ))}
      {skills.length === 0 && <li>no skills listed</li>}
    </ul>
  );
}
