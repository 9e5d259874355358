import { useEffect, useState } from "react";
import { ApiError, call, type Json } from "../api";
import { Problem } from "./common";

/** The traces the agents sent the Studio (OTLP), newest first, and one as a waterfall. */
export function Traces({ ns, id }: { ns: string; id?: string }) {
  const [list, setList] = useState<Json[] | null>(null);
  const [trace, setTrace] = useState<Json | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    setError(null);
    if (id) call<Json>("GET", `/api/traces/${encodeURIComponent(id)}`).then(setTrace, setError);
    else call<Json>("GET", "/api/traces").then((d) => setList(d.items), setError);
  }, [id]);
  return (
    <section aria-labelledby="traces-title">
      <h2 id="traces-title">{id ? `Trace ${id}` : "Traces"}</h2>
      <Problem error={error} />
      {!id && list && list.length === 0 && (
        <p>No traces yet: point the agents' OTEL_EXPORTER_OTLP_ENDPOINT at this Studio.</p>
      )}
      {!id && list && list.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Trace</th>
              <th scope="col">Root</th>
              <th scope="col">Services</th>
              <th scope="col">Spans</th>
              <th scope="col">Duration</th>
            </tr>
          </thead>
          <tbody>
            {list.map((t) => (
              <tr key={t.traceId}>
                <td>
                  <a href={`#/${ns}/traces/${t.traceId}`}>{t.traceId.slice(0, 12)}</a>
                  {t.error && <span className="tag">error</span>}
                </td>
                <td>{t.root}</td>
                <td>{t.services.join(", ")}</td>
                <td>{t.spans}</td>
                <td>{t.durationMs} ms</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {id && trace && (
        <ol className="waterfall" aria-label="Waterfall">
          {trace.spans.map((s: Json) => (
            <li key={s.spanId} data-span={s.name} data-service={s.service}>
              <span className="label" style={{ paddingLeft: `${s.depth * 1.2}rem` }}>
                {s.service}: {s.name}
                {s.error && <span className="tag">error</span>}
              </span>
              <span className="track" aria-hidden="true">
                <span
                  className={s.error ? "span error" : "span"}
                  style={{
                    left: `${(100 * s.offsetMs) / Math.max(trace.durationMs, 0.001)}%`,
                    width: `${Math.max(0.5, (100 * s.durationMs) / Math.max(trace.durationMs, 0.001))}%`,
                  }}
                />
              </span>
              <span className="ms">{s.durationMs} ms</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
