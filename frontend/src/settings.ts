import { create } from "zustand";
import { persist } from "zustand/middleware";

export type Theme = "system" | "light" | "dark";

export interface SettingsState {
  /** The gateway's base URL; empty: the page's own origin (the gateway serving this UI). */
  gatewayUrl: string;
  /** Sent as `Authorization: Bearer …` when set. */
  apiKey: string;
  theme: Theme;
  /** How often the model picker re-reads the models' statuses, in seconds; 0: only after an action or an
   * answer (which may have loaded or swapped out a model). */
  modelsPollS: number;
  set: (patch: Partial<Omit<SettingsState, "set">>) => void;
}

export const useSettings = create<SettingsState>()(
  persist(
    (set) => ({ gatewayUrl: "", apiKey: "", theme: "system", modelsPollS: 5, set: (patch) => set(patch) }),
    { name: "groupqwen.settings" },
  ),
);

/** Applies the theme to <html>, following the system's preference for "system". */
export function applyTheme(theme: Theme, systemDark: boolean): void {
  const dark = theme === "dark" || (theme === "system" && systemDark);
  document.documentElement.classList.toggle("dark", dark);
  document.documentElement.style.colorScheme = dark ? "dark" : "light";
}
