import { useEffect, useState } from "react";
import type { Schema } from "./schema";

type Value = any;
type Props = { name: string; schema: Schema; value: Value; onChange: (v: Value) => void; path: string; depth: number };

function Help({ schema, id }: { schema: Schema; id: string }) {
  const rules = schema["x-kubernetes-validations"] ?? [];
  if (!schema.description && rules.length === 0) return null;
  return (
    <small id={id} className="help">
      {schema.description}
      {rules.map((r, i) => (
        <span key={i} className="rule">
          {" "}
          Rule: {r.message ?? r.rule}.
        </span>
      ))}
    </small>
  );
}

/** One field of a CRD's schema as a form control; objects and lists nest. */
export function Field({ name, schema, value, onChange, path, depth }: Props) {
  const id = `f-${path.replace(/[^a-zA-Z0-9]/g, "-")}`;
  const help = `${id}-help`;
  if (schema.type === "object" && schema.properties) {
    const obj = (value ?? {}) as Record<string, Value>;
    const body = (
      <>
        <Help schema={schema} id={help} />
        {Object.entries(schema.properties).map(([key, sub]) => (
          <Field
            key={key}
            name={key}
            schema={sub}
            value={obj[key]}
            path={`${path}.${key}`}
            depth={depth + 1}
            onChange={(v) => {
              const next = { ...obj };
              if (v === undefined || v === "" || (Array.isArray(v) && v.length === 0)) delete next[key];
              else next[key] = v;
              onChange(Object.keys(next).length ? next : undefined);
            }}
          />
        ))}
      </>
    );
    return depth > 1 ? (
      <details className="group" open={value !== undefined}>
        <summary>{name}</summary>
        {body}
      </details>
    ) : (
      <fieldset className="group">
        <legend>{name}</legend>
        {body}
      </fieldset>
    );
  }
  if (schema.type === "array" && schema.items) {
    const items = (value ?? []) as Value[];
    if (schema.items.type === "object") {
      return (
        <fieldset className="group">
          <legend>{name}</legend>
          <Help schema={schema} id={help} />
          {items.map((item, i) => (
            <div key={i} className="item">
              <Field
                name={`${name} ${i + 1}`}
                schema={schema.items!}
                value={item}
                path={`${path}.${i}`}
                depth={1}
                onChange={(v) => onChange(items.map((x, j) => (j === i ? v : x)))}
              />
              <button type="button" onClick={() => onChange(items.filter((_, j) => j !== i))}>
                Remove {name} {i + 1}
              </button>
            </div>
          ))}
          <button type="button" data-path={`${path}.add`} onClick={() => onChange([...items, {}])}>
            Add {name}
          </button>
        </fieldset>
      );
    }
    if (schema.items.enum) {
      return (
        <fieldset className="group">
          <legend>{name}</legend>
          <Help schema={schema} id={help} />
          {schema.items.enum.map((option) => (
            <label key={String(option)} className="choice">
              <input
                type="checkbox"
                data-path={`${path}.${String(option)}`}
                checked={items.includes(option)}
                onChange={(e) => onChange(e.target.checked ? [...items, option] : items.filter((x) => x !== option))}
              />{" "}
              {String(option)}
            </label>
          ))}
        </fieldset>
      );
    }
    return <ListField name={name} schema={schema} items={items} onChange={onChange} id={id} help={help} path={path} />;
  }
  if (schema.type === "object") {
    // a map (additionalProperties): keys are the user's, so it is edited as YAML
    return (
      <div className="field">
        <span className="label">{name}</span>
        <small className="help">
          A map: edit it in the YAML view.{value ? ` Now: ${JSON.stringify(value)}` : ""}
        </small>
        <Help schema={schema} id={help} />
      </div>
    );
  }
  if (schema.enum) {
    return (
      <div className="field">
        <label htmlFor={id}>{name}</label>
        <select id={id} data-path={path} aria-describedby={help} value={value ?? ""} onChange={(e) => onChange(e.target.value || undefined)}>
          <option value="">(default{schema.default !== undefined ? `: ${schema.default}` : ""})</option>
          {schema.enum.map((option) => (
            <option key={String(option)} value={String(option)}>
              {String(option)}
            </option>
          ))}
        </select>
        <Help schema={schema} id={help} />
      </div>
    );
  }
  if (schema.type === "boolean") {
    // three states: unset (the default), true, false
    return (
      <div className="field">
        <label htmlFor={id}>{name}</label>
        <select
          id={id}
          data-path={path}
          aria-describedby={help}
          value={value === undefined ? "" : String(value)}
          onChange={(e) => onChange(e.target.value === "" ? undefined : e.target.value === "true")}
        >
          <option value="">(default{schema.default !== undefined ? `: ${schema.default}` : ""})</option>
          <option value="true">true</option>
          <option value="false">false</option>
        </select>
        <Help schema={schema} id={help} />
      </div>
    );
  }
  const numeric = schema.type === "integer" || schema.type === "number";
  return (
    <div className="field">
      <label htmlFor={id}>{name}</label>
      <input
        id={id}
        data-path={path}
        aria-describedby={help}
        type={numeric ? "number" : "text"}
        min={schema.minimum}
        max={schema.maximum}
        placeholder={schema.default !== undefined ? String(schema.default) : undefined}
        value={value ?? ""}
        onChange={(e) => onChange(e.target.value === "" ? undefined : numeric ? Number(e.target.value) : e.target.value)}
      />
      <Help schema={schema} id={help} />
    </div>
  );
}

/** A list of plain values, one a line (a value may hold commas: a regular expression). */
function ListField({
  name,
  schema,
  items,
  onChange,
  id,
  help,
  path,
}: {
  name: string;
  schema: Schema;
  items: unknown[];
  onChange: (v: unknown) => void;
  id: string;
  help: string;
  path: string;
}) {
  const joined = items.map(String).join("\n");
  const [text, setText] = useState(joined);
  useEffect(() => setText(joined), [joined]); // the object changed elsewhere (YAML, a load)
  const numeric = schema.items?.type === "integer" || schema.items?.type === "number";
  return (
    <div className="field">
      <label htmlFor={id}>{name} (one a line)</label>
      <textarea
        id={id}
        data-path={path}
        aria-describedby={help}
        rows={Math.max(2, items.length + 1)}
        value={text}
        onChange={(e) => {
          setText(e.target.value);
          const values = e.target.value.split("\n").map((s) => s.trim()).filter(Boolean);
          onChange(numeric ? values.map(Number) : values);
        }}
      />
      <Help schema={schema} id={help} />
    </div>
  );
}
