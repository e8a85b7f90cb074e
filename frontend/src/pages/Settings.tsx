import { useState } from "react";
import { getJson, route } from "../api/client";
import { useSettings, type Theme } from "../settings";

export default function SettingsPage() {
  const settings = useSettings();
  const [check, setCheck] = useState<string | null>(null);
  const test = async () => {
    setCheck("Checking…");
    try {
      const models = await getJson<{ data: unknown[] }>(route("/v1/models"));
      setCheck(`Connected: ${models.data.length} models`);
    } catch (exc) {
      setCheck(exc instanceof Error ? exc.message : String(exc));
    }
  };
  const field = "mt-1 w-full rounded border border-zinc-300 bg-transparent p-2 dark:border-zinc-600";
  return (
    <div className="mx-auto max-w-xl space-y-4 p-4">
      <h1 className="text-xl font-semibold">Settings</h1>
      <p className="text-sm text-zinc-600 dark:text-zinc-400">Kept in this browser only.</p>
      <label className="block">Gateway URL
        <input type="url" className={field} placeholder={location.origin} value={settings.gatewayUrl} onChange={(e) => settings.set({ gatewayUrl: e.target.value.trim() })} />
        <span className="text-xs text-zinc-600 dark:text-zinc-400">Empty: the gateway serving this page.</span>
      </label>
      <label className="block">API key
        <input type="password" autoComplete="off" className={field} value={settings.apiKey} onChange={(e) => settings.set({ apiKey: e.target.value })} />
        <span className="text-xs text-zinc-600 dark:text-zinc-400">Sent as Authorization: Bearer when the gateway requires keys.</span>
      </label>
      <label className="block">Theme
        <select className={`${field} bg-white dark:bg-zinc-900`} value={settings.theme} onChange={(e) => settings.set({ theme: e.target.value as Theme })}>
          <option value="system">Follow the system</option>
          <option value="light">Light</option>
          <option value="dark">Dark</option>
        </select>
      </label>
      <label className="block">Model status refresh (seconds)
        <input type="number" min={0} step={1} className={field} value={settings.modelsPollS} onChange={(e) => settings.set({ modelsPollS: Math.max(0, Number(e.target.value) || 0) })} />
        <span className="text-xs text-zinc-600 dark:text-zinc-400">How often the model picker re-reads the statuses; 0: only after a load, an unload or an answer.</span>
      </label>
      <button type="button" onClick={() => void test()} className="rounded bg-indigo-600 px-3 py-2 text-white">Test connection</button>
      {check ? <p role="status" data-testid="connection">{check}</p> : null}
    </div>
  );
}
