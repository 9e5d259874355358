import { useEffect, useState } from "react";
import { ApiError, call, type Json } from "../api";
import { Problem } from "./common";

const AGENT_SPAN = /^(invoke_agent|chat|execute_tool|embeddings|run_task|resume_task)\b/;
const isAgentSpan = (s: Json) => s.depth === 0 || s.attributes?.["gen_ai.operation.name"] !== undefined || AGENT_SPAN.test(s.name);

/** Recent traces (from Jaeger, or the ones the agents sent the Studio), newest first, and one
 * as a waterfall. Spans leave the agents in batches, each agent on its own: a trace just
 * answered may be missing or partial, so its page asks again every second for 20 s (a 404
 * is said only after that). */
export function Traces({ ns, id }: { ns: string; id?: string }) {
  const [list, setList] = useState<Json[] | null>(null);
  const [trace, setTrace] = useState<Json | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [agentOnly, setAgentOnly] = useState(true);
  useEffect(() => {
    setError(null);
    setTrace(null);
    let cancelled = false; // a late answer for the trace shown before must not land here
    let left = 20;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const again = () => {
      if (--left > 0) timer = setTimeout(load, 1000);
    };
    const load = () =>
      call<Json>("GET", `/api/traces/${encodeURIComponent(id!)}`).then(
        (t) => {
          if (cancelled) return;
          setTrace(t);
          setError(null);
          again();
        },
        (e: ApiError) => {
          if (cancelled) return;
          if (e.status === 404 && left > 1) again();
          else setError(e);
        },
      );
    if (id) load();
    else call<Json>("GET", "/api/traces").then((d) => !cancelled && setList(d.items), (e) => !cancelled && setError(e));
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [id]);
  return (
    <section aria-labelledby="traces-title">
      <h2 id="traces-title">{id ? `Trace ${id}` : "Traces"}</h2>
      <Problem error={error} />
      {!id && list && list.length === 0 && (
        <p>No traces in the last hour: are the agents' OTEL_EXPORTER_OTLP_ENDPOINT set (chart value otel.endpoint)?</p>
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
        <label>
          <input type="checkbox" checked={agentOnly} onChange={(e) => setAgentOnly(e.target.checked)} /> Agent spans only
          (invoke_agent, chat, execute_tool, tasks; not the libraries' own)
        </label>
      )}
      {id && trace && (
        <ol className="waterfall" aria-label="Waterfall">
          {trace.spans.filter((s: Json) => !agentOnly || isAgentSpan(s)).map((s: Json) => (
            <li key={s.spanId} data-span={s.name} data-service={s.service}>
              <span className="label" style={{ paddingLeft: `${s.depth * 1.2}rem` }}>
                {s.service}: {s.name}
                {s.attributes?.["gen_ai.usage.input_tokens"] !== undefined && (
                  <small>
                    {" "}
                    · {s.attributes["gen_ai.usage.input_tokens"]} in / {s.attributes["gen_ai.usage.output_tokens"] ?? 0} out
                  </small>
                )}
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
