import { useEffect, useRef, useState } from "react";
import { ApiError, nsPath, stream, type Json } from "../api";
import { Problem, useLive } from "./common";

type Tool = { callId: string; tool: string; source: string; target: string; ok?: boolean; ms?: number };
type Turn = { role: "user" | "agent"; text: string; tools: Tool[]; meta?: Json; failed?: string };

const what = (t: Tool) =>
  t.source === "partner"
    ? `partner hop to ${t.target.split("/").pop()}`
    : t.source === "knowledge"
      ? `knowledge ${t.target}`
      : `tool ${t.tool} on ${t.target}`;

/** Chat with an agent through the Studio (the apiserver's service proxy, as the user): the
 * answer streams in, with each tool call and partner hop as it starts and finishes. */
export function Playground({ ns }: { ns: string }) {
  const [agents] = useLive<{ items: Json[] }>(ns, `${nsPath(ns)}/agents`);
  const [agent, setAgent] = useState("");
  const [api, setApi] = useState<"openai" | "a2a">("openai");
  const [message, setMessage] = useState("");
  const [turns, setTurns] = useState<Turn[]>([]);
  const [context, setContext] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const chosen = agent || agents?.items[0]?.name || "";
  // leaving the page stops the answer: the Studio closes the agent's stream with it
  const reading = useRef<AbortController | null>(null);
  useEffect(() => () => reading.current?.abort(), []);

  // changes the conversation's last turn (the answer streaming in)
  const update = (change: (turn: Turn) => Turn) =>
    setTurns((all) => [...all.slice(0, -1), change(all[all.length - 1])]);

  const onEvent = (event: Json) => {
    if (event.type === "start") {
      setContext(event.contextId);
      update((t) => ({ ...t, meta: { traceId: event.traceId, api: event.api } }));
    } else if (event.type === "task" || event.type === "state") {
      update((t) => ({
        ...t,
        meta: { ...t.meta, taskId: event.taskId ?? t.meta?.taskId, state: event.state, asks: event.message },
      }));
    } else if (event.type === "delta") {
      update((t) => ({ ...t, text: event.replace ? event.text : t.text + event.text }));
    } else if (event.type === "tool") {
      const tool = event as Tool;
      update((t) => {
        if (event.event === "tool_start") return { ...t, tools: [...t.tools, tool] };
        // a model may reuse a call id in a later round: the end is the latest running one's
        const at = t.tools.map((x) => x.callId === tool.callId && x.ok === undefined).lastIndexOf(true);
        return at < 0 ? t : { ...t, tools: t.tools.map((x, i) => (i === at ? tool : x)) };
      });
    } else if (event.type === "done") {
      update((t) => ({ ...t, meta: { ...t.meta, agentspec: event.agentspec } }));
    } else if (event.type === "usage") {
      update((t) => ({ ...t, meta: { ...t.meta, usage: event.usage } }));
    } else if (event.type === "error") {
      update((t) => ({ ...t, failed: event.message }));
    }
  };

  // the controls that would clear or switch the conversation wait while an answer streams
  const send = async () => {
    setBusy(true);
    setError(null);
    setTurns((t) => [...t, { role: "user", text: message, tools: [] }, { role: "agent", text: "", tools: [] }]);
    let started = false;
    const controller = new AbortController();
    reading.current = controller;
    try {
      await stream(
        `${nsPath(ns)}/agents/${encodeURIComponent(chosen)}/chat`,
        { message, contextId: context, stream: true, api },
        (event) => {
          started = true;
          onEvent(event);
        },
        controller.signal,
      );
      setMessage("");
    } catch (e) {
      if (started) {
        // the answer broke off: what came stays, with why it stopped
        update((t) => ({ ...t, failed: (e as ApiError).message }));
      } else {
        setTurns((t) => t.slice(0, -1)); // no answer began: the error says why
        setError(e as ApiError);
      }
    }
    setBusy(false);
  };

  return (
    <section aria-labelledby="playground-title">
      <h2 id="playground-title">Playground</h2>
      <div className="row">
        <label>
          Agent{" "}
          <select
            value={chosen}
            disabled={busy}
            onChange={(e) => {
              setAgent(e.target.value);
              setTurns([]);
              setContext(null);
            }}
          >
            {agents?.items.map((a) => (
              <option key={a.name}>{a.name}</option>
            ))}
          </select>
        </label>
        <label>
          API{" "}
          <select value={api} disabled={busy} onChange={(e) => setApi(e.target.value as "openai" | "a2a")}>
            <option value="openai">OpenAI-compatible (tool calls shown)</option>
            <option value="a2a">A2A (a task)</option>
          </select>
        </label>
        <button
          disabled={busy}
          onClick={() => {
            setTurns([]);
            setContext(null);
          }}
        >
          New conversation
        </button>
      </div>
      <ol className="chat" aria-label="Conversation" aria-live="polite" aria-busy={busy}>
        {turns.map((t, i) => (
          <li key={i} className={t.role}>
            <strong>{t.role === "user" ? "You" : chosen}:</strong>
            {t.tools.length > 0 && (
              <ul className="tools" aria-label="Tool calls">
                {t.tools.map((tool, n) => (
                  <li key={n} data-tool={tool.tool} data-source={tool.source}>
                    {what(tool)} —{" "}
                    {tool.ok === undefined ? "running…" : `${tool.ok ? "ok" : "failed"} in ${tool.ms} ms`}
                  </li>
                ))}
              </ul>
            )}{" "}
            {t.text}
            {t.failed && (
              <span role="alert" className="problem">
                {" "}
                The answer failed: {t.failed}
              </span>
            )}
            {t.meta?.taskId && (
              <small className="meta" aria-label="Task">
                A2A task {t.meta.taskId} · {t.meta.state}
                {t.meta.asks && <> · it asks: {t.meta.asks}</>}
              </small>
            )}
            {t.meta?.agentspec && (
              <small className="meta" aria-label="Answer details">
                prompt {t.meta.agentspec.promptVersion}
                {t.meta.agentspec.toolCalls !== undefined && <> · tool calls {t.meta.agentspec.toolCalls}</>} · tokens{" "}
                {t.meta.usage?.prompt_tokens ?? 0} in / {t.meta.usage?.completion_tokens ?? 0} out
                {t.meta.agentspec.partnerUsage && (
                  <>
                    {" "}
                    · partner tokens{" "}
                    {(t.meta.agentspec.partnerUsage.prompt_tokens ?? 0) + (t.meta.agentspec.partnerUsage.completion_tokens ?? 0)}
                  </>
                )}{" "}
                · trace <a href={`#/${ns}/traces/${t.meta.traceId}`}>{t.meta.traceId}</a>
              </small>
            )}
          </li>
        ))}
      </ol>
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          if (message.trim() && chosen) send();
        }}
      >
        <label className="grow">
          Message <input value={message} onChange={(e) => setMessage(e.target.value)} disabled={busy} />
        </label>
        <button type="submit" disabled={busy || !chosen}>
          Send
        </button>
      </form>
      <Problem error={error} />
    </section>
  );
}
