import { nsPath, type Json } from "../api";
import { Badge, Problem, Skills, useLive } from "./common";

export function Registries({ ns }: { ns: string }) {
  const [servers, serverError] = useLive<{ items: Json[] }>(ns, `${nsPath(ns)}/mcpservers`);
  const [agents, agentError] = useLive<{ items: Json[] }>(ns, `${nsPath(ns)}/agents`);
  return (
    <section aria-labelledby="registries-title">
      <h2 id="registries-title">Registries</h2>
      <h3>MCP servers</h3>
      <Problem error={serverError} />
      {servers?.items.length === 0 && <p>None.</p>}
      {servers?.items.map((s) => (
        <article key={s.name} className="card">
          <h4>
            {s.name} <Badge ok={s.reachable}>{s.reachable ? "reachable" : s.reason ?? "unknown"}</Badge>
          </h4>
          <p>
            <code>{s.url}</code>
          </p>
          <ul>
            {s.tools.map((tool: Json) => (
              <li key={tool.name}>
                <strong>{tool.name}</strong>: {tool.description}
                <details>
                  <summary>input schema</summary>
                  <pre>{JSON.stringify(tool.inputSchema ?? tool.input_schema ?? {}, null, 2)}</pre>
                </details>
              </li>
            ))}
          </ul>
        </article>
      ))}
      <h3>Agents</h3>
      <Problem error={agentError} />
      <table>
        <thead>
          <tr>
            <th scope="col">Agent</th>
            <th scope="col">Calls (partners)</th>
            <th scope="col">MCP servers</th>
            <th scope="col">Knowledge</th>
            <th scope="col">Skills (agent card)</th>
          </tr>
        </thead>
        <tbody>
          {agents?.items.map((a) => (
            <tr key={a.name}>
              <td>
                <a href={`#/${ns}/agents/${encodeURIComponent(a.name)}`}>{a.name}</a>
              </td>
              <td>{a.partners.join(", ")}</td>
              <td>{a.mcpServers.join(", ")}</td>
              <td>{a.knowledge.join(", ")}</td>
              <td>
                <Skills ns={ns} name={a.name} ready={a.ready} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
