import { useEffect, useState } from "react";
import { call, type Json } from "./api";
import { Agents, AgentDetail } from "./pages/Agents";
import { Editor } from "./pages/Editor";
import { Playground } from "./pages/Playground";
import { Prompts } from "./pages/Prompts";
import { Registries } from "./pages/Registries";
import { Topology } from "./pages/Topology";
import { Traces } from "./pages/Traces";
import { Usage } from "./pages/Usage";

// Hash routes: #/<namespace>/<page>[/<name>]; the server serves one index.html.
function useRoute(): string[] {
  const read = () => window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

const PAGES: [string, string][] = [
  ["agents", "Agents"],
  ["new", "New agent"],
  ["prompts", "Prompts"],
  ["registries", "Registries"],
  ["topology", "Topology"],
  ["playground", "Playground"],
  ["usage", "Usage & cost"],
  ["traces", "Traces"],
];

export function App() {
  const [health, setHealth] = useState<Json | null>(null);
  const route = useRoute();
  useEffect(() => {
    call("GET", "/api/health").then(setHealth, (e) => setHealth({ cluster: { ok: false, error: e.body?.cluster?.error ?? e.message } }));
  }, []);
  if (!health) return <p className="notice">Connecting to the cluster…</p>;
  const ns = route[0] ? decodeURIComponent(route[0]) : health.namespace ?? "default";
  const page = route[1] ?? "agents";
  const name = route[2] ? decodeURIComponent(route[2]) : undefined;
  return (
    <>
      <header>
        <h1>Agent Studio</h1>
        <nav aria-label="Pages">
          {PAGES.map(([id, label]) => (
            <a key={id} href={`#/${ns}/${id}`} aria-current={page === id ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <form
          className="namespace"
          onSubmit={(e) => {
            e.preventDefault();
            const value = String(new FormData(e.currentTarget).get("ns") ?? "").trim();
            const rest = name ? `${page}/${encodeURIComponent(name)}` : page;
            window.location.hash = `#/${encodeURIComponent(value)}/${rest}`;
          }}
        >
          <label>
            Namespace <input name="ns" defaultValue={ns} key={ns} />
          </label>
        </form>
      </header>
      {!health.cluster?.ok && (
        <p role="alert" className="error">
          The cluster cannot be reached: {health.cluster?.error}
        </p>
      )}
      <main>
        {page === "agents" && !name && <Agents ns={ns} />}
        {page === "agents" && name && <AgentDetail ns={ns} name={name} />}
        {page === "new" && <Editor ns={ns} />}
        {page === "edit" && name && <Editor ns={ns} name={name} />}
        {page === "prompts" && <Prompts ns={ns} />}
        {page === "registries" && <Registries ns={ns} />}
        {page === "topology" && <Topology ns={ns} />}
        {page === "playground" && <Playground ns={ns} />}
        {page === "usage" && <Usage ns={ns} />}
        {page === "traces" && <Traces ns={ns} id={name} />}
      </main>
    </>
  );
}
