import { useMemo } from "react";
import { Background, Controls, ReactFlow, type Edge, type Node } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { nsPath, type Json } from "../api";
import { Problem, useLive } from "./common";

const COLUMN: Record<string, number> = { agent: 0, mcp: 1, knowledge: 1 };

export function Topology({ ns }: { ns: string }) {
  const [data, error] = useLive<Json>(ns, `${nsPath(ns)}/topology`);
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
    const edges: Edge[] = data.edges.map((e: Json, i: number) => ({
      id: `e${i}`,
      source: e.from,
      target: e.to,
      label: e.kind,
      animated: e.kind === "partner",
    }));
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
      <p className="help">Edges are the declared calls; call rates from Prometheus are not shown yet.</p>
    </section>
  );
}
