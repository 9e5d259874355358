import { useEffect, useState } from "react";
import { ApiError, call, nsPath, type Json } from "../api";
import { Problem } from "./common";

export function useUsage(ns: string, window: string): [Json | null, ApiError | null] {
  const [data, setData] = useState<Json | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    const load = () =>
      call<Json>("GET", `${nsPath(ns)}/usage?window=${window}`).then(
        (d) => {
          setData(d);
          setError(null);
        },
        setError,
      );
    load();
    const timer = setInterval(load, 10_000);
    return () => clearInterval(timer);
  }, [ns, window]);
  return [data, error];
}

/** Tokens and cost per agent, prompt version and consumer over a window, from Prometheus. */
export function Usage({ ns }: { ns: string }) {
  const [window, setWindow] = useState("1h");
  const [data, error] = useUsage(ns, window);
  const most = Math.max(1, ...(data?.rows ?? []).map((r: Json) => r.input + r.output));
  return (
    <section aria-labelledby="usage-title">
      <h2 id="usage-title">Usage and cost</h2>
      <label>
        Window{" "}
        <select value={window} onChange={(e) => setWindow(e.target.value)}>
          {["15m", "1h", "6h", "24h", "7d"].map((w) => (
            <option key={w}>{w}</option>
          ))}
        </select>
      </label>
      <Problem error={error} />
      {data && (
        <table aria-label="Tokens by agent and prompt version">
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">Prompt version</th>
              <th scope="col">Model</th>
              <th scope="col">Input tokens</th>
              <th scope="col">Output tokens</th>
              <th scope="col">Cost (USD)</th>
              <th scope="col">Share</th>
            </tr>
          </thead>
          <tbody>
            {data.rows.map((r: Json) => (
              <tr key={`${r.agent}/${r.promptVersion}/${r.model}`} data-usage={`${r.agent}/${r.promptVersion}`}>
                <td>{r.agent}</td>
                <td>{r.promptVersion}</td>
                <td>{r.model}</td>
                <td>{r.input}</td>
                <td>{r.output}</td>
                <td>{r.cost === null ? "no price" : r.cost.toFixed(6)}</td>
                <td>
                  <span className="bar" style={{ width: `${(100 * (r.input + r.output)) / most}%` }} aria-hidden="true" />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {data && (
        <>
          <h3>By consumer</h3>
          <table aria-label="Tokens by consumer">
            <thead>
              <tr>
                <th scope="col">Agent</th>
                <th scope="col">Consumer</th>
                <th scope="col">Model</th>
                <th scope="col">Input tokens</th>
                <th scope="col">Output tokens</th>
                <th scope="col">Cost (USD)</th>
              </tr>
            </thead>
            <tbody>
              {data.consumers.map((r: Json) => (
                <tr key={`${r.agent}/${r.consumer}/${r.model}`} data-consumer={`${r.agent}/${r.consumer}`}>
                  <td>{r.agent}</td>
                  <td>{r.consumer}</td>
                  <td>{r.model}</td>
                  <td>{r.input}</td>
                  <td>{r.output}</td>
                  <td>{r.cost === null ? "no price" : r.cost.toFixed(6)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="help">
            A consumer is the API key's name or the JWT's consumer claim (anonymous without auth); an agent labels at most 100,
            the rest as _other.
          </p>
        </>
      )}
      {data && (
        <>
          <h3>Price table</h3>
          {Object.keys(data.prices ?? {}).length === 0 ? (
            <p className="help">No prices: costs show as "no price".</p>
          ) : (
            <table aria-label="Price table">
              <thead>
                <tr>
                  <th scope="col">Model</th>
                  <th scope="col">Input (USD per 1M tokens)</th>
                  <th scope="col">Output (USD per 1M tokens)</th>
                </tr>
              </thead>
              <tbody>
                {Object.entries(data.prices as Record<string, Json>).map(([model, price]) => (
                  <tr key={model} data-price={model}>
                    <td>{model}</td>
                    <td>{price.input}</td>
                    <td>{price.output}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <p className="help">
            The Studio's settings: agentspec studio --prices FILE (YAML: model: {"{"}input, output{"}"}), or the chart's
            studio.prices.
          </p>
        </>
      )}
      {data && (
        <>
          <h3>Requests</h3>
          <ul>
            {data.requests.map((r: Json) => (
              <li key={r.agent}>
                {r.agent}:{" "}
                {Object.entries(r)
                  .filter(([k]) => k !== "agent")
                  .map(([k, v]) => `${k} ${v}`)
                  .join(", ")}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
