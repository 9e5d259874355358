import { useEffect, useRef } from "react";
import { EditorView, basicSetup } from "codemirror";
import { yaml as yamlLanguage } from "@codemirror/lang-yaml";
import { linter, lintGutter, type Diagnostic } from "@codemirror/lint";
import { parseDocument, isNode } from "yaml";
import { check, type Schema } from "./schema";

/** The object as YAML, editable, checked against the CRD's schema as the user types. */
export function YamlView({ text, schema, onChange }: { text: string; schema: Schema | null; onChange: (t: string) => void }) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const latest = useRef({ schema, onChange });
  latest.current = { schema, onChange };

  useEffect(() => {
    const lint = linter((v) => {
      const doc = parseDocument(v.state.doc.toString());
      const out: Diagnostic[] = doc.errors.map((e) => ({
        from: e.pos[0],
        to: Math.max(e.pos[1], e.pos[0] + 1),
        severity: "error",
        message: e.message,
      }));
      const s = latest.current.schema;
      if (!out.length && s) {
        for (const p of check(s, doc.toJS())) {
          const node = doc.getIn(p.path, true);
          const range = isNode(node) && node.range ? node.range : [0, 1];
          out.push({ from: range[0], to: Math.max(range[1], range[0] + 1), severity: "error", message: p.message });
        }
      }
      return out;
    });
    view.current = new EditorView({
      doc: text,
      parent: host.current!,
      extensions: [
        basicSetup,
        yamlLanguage(),
        lintGutter(),
        lint,
        EditorView.contentAttributes.of({ "aria-label": "YAML" }),
        EditorView.updateListener.of((u) => u.docChanged && latest.current.onChange(u.state.doc.toString())),
      ],
    });
    return () => view.current?.destroy();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== text) {
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: text } });
    }
  }, [text]);

  return <div className="yaml" ref={host} />;
}
