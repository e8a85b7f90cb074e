import { lazy, Suspense } from "react";

// Markdown and highlight.js are most of the app's weight: they load after the first paint (main.tsx
// preloads them), and an answer shows as plain text until then.
export const loadMarkdown = () => import("./Markdown");
const Markdown = lazy(() => loadMarkdown().then((m) => ({ default: m.Markdown })));

export function LazyMarkdown({ text }: { text: string }) {
  return (
    <Suspense fallback={<div className="whitespace-pre-wrap break-words">{text}</div>}>
      <Markdown text={text} />
    </Suspense>
  );
}
