import { memo, useState, type ReactNode } from "react";
import ReactMarkdown from "react-markdown";
import type { Root } from "hast";
import rehypeHighlight, { type Options } from "rehype-highlight";
import type { Transformer } from "unified";
import { blocks } from "./blocks";

function textOf(node: ReactNode): string {
  if (typeof node === "string" || typeof node === "number") return String(node);
  if (Array.isArray(node)) return node.map(textOf).join("");
  if (node && typeof node === "object" && "props" in node) {
    return textOf((node.props as { children?: ReactNode }).children);
  }
  return "";
}

function CodeBlock({ children }: { children?: ReactNode }) {
  const [copied, setCopied] = useState(false);
  const copy = () => {
    void navigator.clipboard.writeText(textOf(children)).then(() => {
      setCopied(true);
      setTimeout(() => setCopied(false), 1500);
    });
  };
  return (
    <div className="relative my-2">
      <button
        type="button"
        onClick={copy}
        className="absolute top-1 right-1 rounded bg-zinc-200 px-2 py-0.5 text-xs text-zinc-800 dark:bg-zinc-700 dark:text-zinc-100"
      >
        {copied ? "Copied" : "Copy"}
      </button>
      <pre className="overflow-x-auto rounded-md bg-zinc-100 p-3 pr-14 text-sm dark:bg-zinc-900">{children}</pre>
    </div>
  );
}

// rehype-highlight registers highlight.js's 37 common grammars each time it is attached, and react-markdown
// attaches its plugins on every render: attached once here, every render gets the same transformer.
const highlight = (rehypeHighlight as (options: Options) => Transformer<Root>)({ detect: false });
const plugins = [() => highlight];
const components = { pre: CodeBlock };

const Block = memo(function Block({ text }: { text: string }) {
  return (
    <ReactMarkdown rehypePlugins={plugins} components={components}>
      {text}
    </ReactMarkdown>
  );
});

/** Markdown with highlighted code blocks that have a copy button (raw HTML is not rendered). Rendered block
 * by block (blocks()), each memoised: while an answer streams only its last block is parsed again. */
export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return (
    <div className="prose-chat space-y-2 break-words [&_a]:text-indigo-700 [&_a]:underline dark:[&_a]:text-indigo-300 [&_ol]:list-decimal [&_ol]:pl-6 [&_ul]:list-disc [&_ul]:pl-6 [&_code]:font-mono [&_table]:block [&_table]:overflow-x-auto">
      {blocks(text).map((block, i) => (
        <Block key={i} text={block} />
      ))}
    </div>
  );
});
