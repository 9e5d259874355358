import { useEffect, useState } from "react";
import { parse, stringify } from "yaml";
import { ApiError, call, nsPath, type Json } from "../api";
import { Diff, Problem } from "./common";
import { Field } from "./SchemaForm";
import { check, type Schema } from "./schema";
import { YamlView } from "./YamlView";

const EMPTY: Json = { apiVersion: "agentspec.io/v1alpha1", kind: "AgentSpec", metadata: { name: "" }, spec: {} };

type Review = { diff: string; created: boolean; argoManaged: string | null; conflicts: Json[] };

/** The spec editor: a form from the CRD's schema and the YAML it makes; saving is a
 * server-side dry run with its diff first, then an apply the user confirms. */
export function Editor({ ns, name }: { ns: string; name?: string }) {
  const [schema, setSchema] = useState<Schema | null>(null);
  const [obj, setObj] = useState<Json>(EMPTY);
  const [text, setText] = useState(stringify(EMPTY));
  const [view, setView] = useState<"form" | "yaml">("form");
  const [review, setReview] = useState<Review | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [toCommit, setToCommit] = useState<string | null>(null);

  useEffect(() => {
    call<Schema>("GET", "/api/schema/AgentSpec").then(setSchema, setError);
    if (name) {
      call<Json>("GET", `${nsPath(ns)}/agents/${encodeURIComponent(name)}`).then((d) => {
        const live = parse(d.yaml);
        setObj(live);
        setText(d.yaml);
      }, setError);
    }
  }, [ns, name]);

  const update = (next: Json) => {
    setObj(next);
    setText(stringify(next));
    setReview(null);
  };
  const fromYaml = (t: string) => {
    setText(t);
    setReview(null);
    try {
      const parsed = parse(t);
      if (parsed && typeof parsed === "object") setObj(parsed);
    } catch {
      /* the YAML view marks it */
    }
  };
  const local = schema ? check(schema, obj) : [];

  const dryRun = async () => {
    setError(null);
    setDone(null);
    setToCommit(null);
    try {
      setReview(await call<Review>("POST", `${nsPath(ns)}/dry-run`, { yaml: text }));
    } catch (e) {
      setError(e as ApiError);
    }
  };
  const apply = async (force = false) => {
    setError(null);
    try {
      await call("POST", `${nsPath(ns)}/apply`, { yaml: text, takeOwnership: (review?.conflicts.length ?? 0) > 0, force });
      setDone(`Saved ${obj.metadata?.name}.`);
      setReview(null);
    } catch (e) {
      const err = e as ApiError;
      if (err.status === 409 && err.body.argoManaged) setToCommit(err.body.yaml);
      setError(err);
    }
  };

  return (
    <section aria-labelledby="editor-title">
      <h2 id="editor-title">{name ? `Edit ${name}` : "New agent"}</h2>
      <div role="tablist" aria-label="View">
        <button role="tab" aria-selected={view === "form"} onClick={() => setView("form")}>
          Form
        </button>
        <button role="tab" aria-selected={view === "yaml"} onClick={() => setView("yaml")}>
          YAML
        </button>
      </div>
      {view === "form" && schema && (
        <form onSubmit={(e) => e.preventDefault()} aria-label="Agent form">
          <div className="field">
            <label htmlFor="agent-name">name</label>
            <input
              id="agent-name"
              data-path="metadata.name"
              required
              readOnly={Boolean(name)}
              value={obj.metadata?.name ?? ""}
              onChange={(e) => update({ ...obj, metadata: { ...obj.metadata, name: e.target.value } })}
            />
          </div>
          <Field name="spec" schema={schema.properties!.spec} value={obj.spec} path="spec" depth={0} onChange={(v) => update({ ...obj, spec: v ?? {} })} />
        </form>
      )}
      {view === "yaml" && <YamlView text={text} schema={schema} onChange={fromYaml} />}
      {local.length > 0 && (
        <ul className="hints" aria-label="Schema problems">
          {local.map((p, i) => (
            <li key={i}>{p.message}</li>
          ))}
        </ul>
      )}
      <p>
        <button onClick={dryRun} disabled={!obj.metadata?.name}>
          Review changes
        </button>
      </p>
      <Problem error={error} />
      {toCommit && (
        <div className="notice">
          <p>Argo CD manages this object: commit this YAML to its Git source instead.</p>
          <pre aria-label="YAML to commit">{toCommit}</pre>
          <button onClick={() => apply(true)}>Apply anyway (Argo CD will undo it on its next sync)</button>
        </div>
      )}
      {review && (
        <div className="review">
          <h3>{review.created ? "A new object" : "Changes"} (server dry run)</h3>
          {review.argoManaged && <p className="tag">Managed by Argo CD application {review.argoManaged}</p>}
          {review.conflicts.length > 0 && (
            <p className="notice">
              Other managers own {review.conflicts.map((c) => c.field).join(", ")}; applying takes them over.
            </p>
          )}
          <Diff text={review.diff} />
          <button onClick={() => apply(false)}>Apply</button>
        </div>
      )}
      {done && (
        <p role="status">
          {done} <a href={`#/${ns}/agents/${encodeURIComponent(obj.metadata?.name)}`}>Open it</a>
        </p>
      )}
    </section>
  );
}
