import { useState } from "react";
import { ApiError, call, nsPath, type Json } from "../api";
import { Problem, useLive } from "./common";

type Turn = { role: "user" | "agent"; text: string; meta?: Json };

/** Chat with an agent through the Studio (the apiserver's service proxy, as the user). */
export function Playground({ ns }: { ns: string }) {
  const [agents] = useLive<{ items: Json[] }>(ns, `${nsPath(ns)}/agents`);
  const [agent, setAgent] = useState("");
  const [message, setMessage] = useState("");
  const [turns, setTurns] = useState<Turn[]>([]);
  const [context, setContext] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const chosen = agent || agents?.items[0]?.name || "";

  const send = async () => {
    setBusy(true);
    setError(null);
    setTurns((t) => [...t, { role: "user", text: message }]);
    try {
      const answer = await call<Json>("POST", `${nsPath(ns)}/agents/${encodeURIComponent(chosen)}/chat`, {
        message,
        contextId: context,
      });
      setContext(answer.contextId);
      setTurns((t) => [...t, { role: "agent", text: answer.answer ?? "", meta: answer }]);
      setMessage("");
    } catch (e) {
      setError(e as ApiError);
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
        <button
          onClick={() => {
            setTurns([]);
            setContext(null);
          }}
        >
          New conversation
        </button>
      </div>
      <ol className="chat" aria-label="Conversation" aria-live="polite">
        {turns.map((t, i) => (
          <li key={i} className={t.role}>
            <strong>{t.role === "user" ? "You" : chosen}:</strong> {t.text}
            {t.meta && (
              <small className="meta" aria-label="Answer details">
                prompt {t.meta.agentspec?.promptVersion} · tool calls {t.meta.agentspec?.toolCalls ?? 0} · tokens{" "}
                {t.meta.usage?.prompt_tokens ?? 0} in / {t.meta.usage?.completion_tokens ?? 0} out · partner tokens{" "}
                {(t.meta.agentspec?.partnerUsage?.prompt_tokens ?? 0) + (t.meta.agentspec?.partnerUsage?.completion_tokens ?? 0)} ·
                trace <a href={`#/${ns}/traces/${t.meta.traceId}`}>{t.meta.traceId}</a>
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
