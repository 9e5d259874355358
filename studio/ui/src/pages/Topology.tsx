import { useMemo } from "react";
import { Background, Controls, ReactFlow, type Edge, type Node } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { nsPath, type Json } from "../api";
import { Problem, useLive } from "./common";

const COLUMN: Record<string, number> = { agent: 0, mcp: 1, knowledge: 1 };

export function Topology({ ns }: { ns: string }) {
  const [data, error] = useLive<Json>(ns, `${nsPath(ns)}/topology`, 10_000);
  const [nodes, edges] = useMemo((): [Node[], Edge[]] => {
    if (!data) return [[], []];
    const rows: Record<string, number> = {};
    const nodes: Node[] = data.nodes.map((n: Json) => {
      const column = COLUMN[n.kind] ?? 0;
      const row = (rows[column] = (rows[column] ?? -1) + 1);
      return {
        id: n.id,
        position: { x: column * 280, y: row * 90 },
        data: { label: `${n.kind === "agent" ? "" : n.kind + ": "}${n.name}` },
        className: `node ${n.kind} ${n.healthy ? "healthy" : "unhealthy"}`,
        ariaLabel: `${n.kind} ${n.name}, ${n.healthy ? "healthy" : "not ready"}`,
      };
    });
    const most = Math.max(0, ...data.edges.map((e: Json) => e.rate ?? 0));
    const edges: Edge[] = data.edges.map((e: Json, i: number) => {
      const rate: number | undefined = e.rate;
      // weighted by call rate: 1 px idle, up to 7 px for the busiest edge
      const width = rate && most > 0 ? 1 + (6 * rate) / most : 1;
      return {
        id: `e${i}`,
        source: e.from,
        target: e.to,
        label: rate === undefined ? e.kind : `${e.kind} · ${rate < 0.01 && rate > 0 ? "<0.01" : rate.toFixed(2)}/s`,
        ariaLabel: `${e.from.split("/").pop()} calls ${e.to.split("/").pop()}${rate === undefined ? "" : `, ${rate.toFixed(2)} calls per second`}`,
        animated: (rate ?? 0) > 0,
        style: { strokeWidth: width },
        data: { rate },
      };
    });
    return [nodes, edges];
  }, [data]);
  return (
    <section aria-labelledby="topology-title">
      <h2 id="topology-title">Topology</h2>
      <Problem error={error} />
      <div className="graph">
        <ReactFlow
          nodes={nodes}
          edges={edges}
          fitView
          onNodeClick={(_, node) => node.id.startsWith("agent/") && (window.location.hash = `#/${ns}/agents/${node.id.slice(6)}`)}
        >
          <Background />
          <Controls />
        </ReactFlow>
      </div>
      <p className="help">
        Edges are the declared calls, labelled and weighted by their rate over the last 5 minutes (tool calls per second, from
        Prometheus).
      </p>
      {data?.ratesError && (
        <p role="status" className="help">
          No call rates: {data.ratesError}
        </p>
      )}
      {data && (
        <table aria-label="Calls">
          <thead>
            <tr>
              <th scope="col">From</th>
              <th scope="col">To</th>
              <th scope="col">Kind</th>
              <th scope="col">Calls/s</th>
            </tr>
          </thead>
          <tbody>
            {data.edges.map((e: Json, i: number) => (
              <tr key={i} data-edge={`${e.from}->${e.to}`}>
                <td>
                  <a href={`#/${ns}/agents/${e.from.slice(6)}`}>{e.from.slice(6)}</a>
                </td>
                <td>{e.to.split("/").slice(1).join("/")}</td>
                <td>{e.kind}</td>
                <td>{e.rate === undefined ? "—" : e.rate.toFixed(2)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
