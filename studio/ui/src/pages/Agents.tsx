import { nsPath, type Json } from "../api";
import { Badge, Problem, Skills, useLive } from "./common";

export function Agents({ ns }: { ns: string }) {
  const [data, error] = useLive<{ items: Json[] }>(ns, `${nsPath(ns)}/agents`);
  // tokens per second and errors from Prometheus, every 10 s (optional: "—" without it)
  const [figures] = useLive<Json>(ns, `${nsPath(ns)}/figures`, 10_000, false);
  const figure = (agent: string, key: string) => figures?.agents?.[agent]?.[key] ?? "—";
  return (
    <section aria-labelledby="agents-title">
      <h2 id="agents-title">Agents in {ns}</h2>
      <Problem error={error} />
      {data && data.items.length === 0 && <p>No agents here yet. <a href={`#/${ns}/new`}>Create one</a>.</p>}
      {data && data.items.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">State</th>
              <th scope="col">Model</th>
              <th scope="col">Prompt versions</th>
              <th scope="col">Replicas</th>
              <th scope="col">Tokens/s</th>
              <th scope="col">Errors (1 h)</th>
            </tr>
          </thead>
          <tbody>
            {data.items.map((a) => (
              <tr key={a.name} data-agent={a.name}>
                <td>
                  <a href={`#/${ns}/agents/${encodeURIComponent(a.name)}`}>{a.name}</a>
                  {a.argoManaged && <span className="tag">Argo CD: {a.argoManaged}</span>}
                </td>
                <td>
                  <Badge ok={a.ready}>{a.ready ? "Ready" : a.reason ?? "Pending"}</Badge>
                  {!a.ready && a.message && <small className="why">{a.message}</small>}
                </td>
                <td>{a.model}</td>
                <td>
                  {a.promptVersions.map((v: Json) => `${v.version} ${v.weight}%`).join(", ")}
                </td>
                <td>
                  {a.readyReplicas ?? 0}/{a.replicas ?? 0}
                </td>
                <td data-figure="tokens">{figure(a.name, "tokensPerSecond")}</td>
                <td data-figure="errors">{figure(a.name, "errors")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {figures?.problem && <p className="help">No tokens/s or errors: {figures.problem}</p>}
    </section>
  );
}

export function AgentDetail({ ns, name }: { ns: string; name: string }) {
  const [data, error] = useLive<Json>(ns, `${nsPath(ns)}/agents/${encodeURIComponent(name)}`);
  return (
    <section aria-labelledby="agent-title">
      <h2 id="agent-title">Agent {name}</h2>
      <Problem error={error} />
      {data && (
        <>
          <p>
            <Badge ok={data.summary.ready}>{data.summary.ready ? "Ready" : data.summary.reason ?? "Pending"}</Badge>{" "}
            <a href={`#/${ns}/edit/${encodeURIComponent(name)}`}>Edit</a>
            {data.agentCard && (
              <>
                {" · "}agent card: <code>{data.agentCard}</code>
              </>
            )}
          </p>
          <h3>Skills (its agent card)</h3>
          <Skills ns={ns} name={name} ready={data.summary.ready} />
          <h3>Conditions</h3>
          <table>
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col">Status</th>
                <th scope="col">Reason</th>
                <th scope="col">Message</th>
              </tr>
            </thead>
            <tbody>
              {data.conditions.map((c: Json) => (
                <tr key={c.type}>
                  <td>{c.type}</td>
                  <td>{c.status}</td>
                  <td>{c.reason}</td>
                  <td>{c.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h3>Events</h3>
          {data.events.length === 0 ? (
            <p>None.</p>
          ) : (
            <ul>
              {data.events.map((e: Json, i: number) => (
                <li key={i}>
                  <strong>{e.type}</strong> {e.reason}: {e.message}
                </li>
              ))}
            </ul>
          )}
          <h3>Children</h3>
          <ul>
            {data.children.map((c: Json) => (
              <li key={`${c.kind}/${c.name}`}>
                {c.kind} {c.name}
              </li>
            ))}
          </ul>
          <h3>Spec</h3>
          <pre>{data.yaml}</pre>
        </>
      )}
    </section>
  );
}
