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
    return (
      <div className="field">
        <label htmlFor={id}>{name} (comma-separated)</label>
        <input
          id={id}
          data-path={path}
          aria-describedby={help}
          defaultValue={items.join(", ")}
          onBlur={(e) => onChange(e.target.value.split(",").map((s) => s.trim()).filter(Boolean))}
        />
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
    return (
      <div className="field">
        <label>
          <input type="checkbox" data-path={path} aria-describedby={help} checked={Boolean(value)} onChange={(e) => onChange(e.target.checked || undefined)} /> {name}
        </label>
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
