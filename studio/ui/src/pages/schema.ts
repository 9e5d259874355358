// A CRD's OpenAPI schema: what the form renders and the YAML view is checked against.
export type Schema = {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  default?: unknown;
  "x-kubernetes-validations"?: { rule: string; message?: string }[];
  "x-kubernetes-preserve-unknown-fields"?: boolean;
  additionalProperties?: Schema | boolean;
};

export type Problem = { path: (string | number)[]; message: string };

/** Types, enums, bounds and required fields (CEL rules are the server's: the dry run). */
export function check(schema: Schema, value: unknown, path: (string | number)[] = []): Problem[] {
  if (value === undefined || value === null) return [];
  const out: Problem[] = [];
  const where = path.join(".") || "the object";
  switch (schema.type) {
    case "object": {
      if (typeof value !== "object" || Array.isArray(value)) return [{ path, message: `${where}: must be a mapping` }];
      const obj = value as Record<string, unknown>;
      for (const name of schema.required ?? []) {
        if (!(name in obj)) out.push({ path, message: `${where}: ${name} is required` });
      }
      for (const [key, child] of Object.entries(obj)) {
        const sub = schema.properties?.[key] ?? (typeof schema.additionalProperties === "object" ? schema.additionalProperties : undefined);
        if (sub) out.push(...check(sub, child, [...path, key]));
        else if (schema.properties && !schema["x-kubernetes-preserve-unknown-fields"] && !schema.additionalProperties)
          out.push({ path: [...path, key], message: `${[...path, key].join(".")}: unknown field` });
      }
      break;
    }
    case "array":
      if (!Array.isArray(value)) return [{ path, message: `${where}: must be a list` }];
      value.forEach((item, i) => schema.items && out.push(...check(schema.items, item, [...path, i])));
      break;
    case "string":
      if (typeof value !== "string") out.push({ path, message: `${where}: must be text` });
      break;
    case "integer":
    case "number":
      if (typeof value !== "number" || (schema.type === "integer" && !Number.isInteger(value)))
        out.push({ path, message: `${where}: must be ${schema.type === "integer" ? "a whole number" : "a number"}` });
      else {
        if (schema.minimum !== undefined && value < schema.minimum) out.push({ path, message: `${where}: at least ${schema.minimum}` });
        if (schema.maximum !== undefined && value > schema.maximum) out.push({ path, message: `${where}: at most ${schema.maximum}` });
      }
      break;
    case "boolean":
      if (typeof value !== "boolean") out.push({ path, message: `${where}: must be true or false` });
      break;
  }
  if (schema.enum && !schema.enum.includes(value)) out.push({ path, message: `${where}: one of ${schema.enum.join(", ")}` });
  return out;
}
