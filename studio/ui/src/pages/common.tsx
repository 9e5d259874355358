import { useCallback, useEffect, useState } from "react";
import { ApiError, call, nsPath, type Json } from "../api";

/** GET a path, again whenever the namespace's objects change (server-sent events). */
export function useLive<T = Json>(ns: string, path: string): [T | null, ApiError | null, () => void] {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const load = useCallback(() => {
    call<T>("GET", path).then(
      (d) => {
        setData(d);
        setError(null);
      },
      (e) => setError(e),
    );
  }, [path]);
  useEffect(() => {
    load();
    const events = new EventSource(`${nsPath(ns)}/live`);
    events.addEventListener("change", load);
    return () => events.close();
  }, [ns, load]);
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
