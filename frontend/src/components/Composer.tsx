import { useState, type ClipboardEvent, type DragEvent } from "react";

const MAX_IMAGE_BYTES = 8 * 2 ** 20;

function readDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error("unreadable"));
    reader.readAsDataURL(file);
  });
}

interface Props {
  busy: boolean;
  images: boolean; // whether the chosen route takes images
  model: string; // the chosen model or route, named when it takes no images
  onSend: (text: string, images: string[]) => void;
  onStop: () => void;
}

export function Composer({ busy, images: acceptsImages, model, onSend, onStop }: Props) {
  const [text, setText] = useState("");
  const [images, setImages] = useState<string[]>([]);
  const [problem, setProblem] = useState<string | null>(null);

  const noImages = `${model} does not take images: choose a model that does, or remove the image`;
  const attach = async (files: Iterable<File>) => {
    const pictures = [...files].filter((file) => file.type.startsWith("image/"));
    if (!acceptsImages) {
      if (pictures.length) setProblem(noImages); // pasted or dropped: said, not dropped without a word
      return;
    }
    for (const file of pictures) {
      if (file.size > MAX_IMAGE_BYTES) {
        setProblem(`${file.name} is larger than 8 MiB`);
        continue;
      }
      const url = await readDataUrl(file);
      setImages((current) => [...current, url]);
    }
  };
  const submit = () => {
    if (busy || !text.trim()) return;
    if (images.length && !acceptsImages) {
      setProblem(noImages); // attached for another model: held back, never sent to be refused
      return;
    }
    onSend(text, images);
    setText("");
    setImages([]);
    setProblem(null);
  };
  return (
    <form
      className="border-t border-zinc-200 p-2 dark:border-zinc-800"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
      onDragOver={(e: DragEvent) => e.dataTransfer.types.includes("Files") && e.preventDefault()}
      onDrop={(e: DragEvent) => {
        e.preventDefault(); // a file dropped here never replaces the page
        void attach(e.dataTransfer.files);
      }}
    >
      {images.length ? (
        <div className="mb-2 flex flex-wrap gap-2">
          {images.map((url, i) => (
            <span key={i} className="relative">
              <img src={url} alt={`attachment ${i + 1}`} className="h-14 w-14 rounded object-cover" />
              <button type="button" aria-label={`Remove attachment ${i + 1}`} onClick={() => { setImages(images.filter((_, j) => j !== i)); setProblem(null); }} className="absolute -top-1 -right-1 rounded-full bg-zinc-800 px-1 text-xs text-white">✕</button>
            </span>
          ))}
        </div>
      ) : null}
      {problem ? <p role="alert" data-testid="composer-problem" className="text-sm text-red-700 dark:text-red-300">{problem}</p> : null}
      <div className="flex items-end gap-2">
        <label htmlFor="prompt" className="sr-only">Message</label>
        <textarea
          id="prompt"
          rows={2}
          value={text}
          placeholder="Send a message (Enter to send, Shift+Enter for a new line)"
          onChange={(e) => setText(e.target.value)}
          onPaste={(e: ClipboardEvent) => void attach(e.clipboardData.files)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
              e.preventDefault();
              submit();
            }
          }}
          className="min-w-0 flex-1 resize-none rounded border border-zinc-300 bg-transparent p-2 dark:border-zinc-600"
        />
        {acceptsImages ? (
          <label className="cursor-pointer rounded border border-zinc-300 px-2 py-2 text-sm dark:border-zinc-600">
            Image
            <input type="file" accept="image/*" multiple className="sr-only" onChange={(e) => e.target.files && void attach(e.target.files)} />
          </label>
        ) : null}
        {busy ? (
          <button type="button" onClick={onStop} className="rounded bg-red-700 px-3 py-2 text-white">Stop</button>
        ) : (
          <button type="submit" className="rounded bg-indigo-600 px-3 py-2 text-white disabled:opacity-50" disabled={!text.trim()}>Send</button>
        )}
      </div>
    </form>
  );
}
