import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { lazy, StrictMode, Suspense, useEffect } from "react";
import { createRoot } from "react-dom/client";
import { createBrowserRouter, NavLink, Navigate, Outlet, RouterProvider } from "react-router";
import "./index.css";
import { loadMarkdown } from "./components/LazyMarkdown";
import { keepInterrupted } from "./chat/db";
import ChatPage from "./pages/Chat";
import { applyTheme, useSettings } from "./settings";

const DashboardPage = lazy(() => import("./pages/Dashboard"));
const DataPage = lazy(() => import("./pages/Data"));
const JobsPage = lazy(() => import("./pages/Jobs"));
const SettingsPage = lazy(() => import("./pages/Settings"));

function Layout() {
  const theme = useSettings((s) => s.theme);
  useEffect(() => {
    const query = matchMedia("(prefers-color-scheme: dark)");
    const apply = () => applyTheme(theme, query.matches);
    apply();
    query.addEventListener("change", apply);
    return () => query.removeEventListener("change", apply);
  }, [theme]);
  const link = ({ isActive }: { isActive: boolean }) =>
    `rounded px-1.5 py-1 sm:px-2 ${isActive ? "bg-zinc-200 font-semibold dark:bg-zinc-800" : ""}`;
  return (
    <div className="flex h-full flex-col">
      <header className="flex h-12 shrink-0 items-center gap-2 border-b border-zinc-200 px-2 text-sm sm:px-3 dark:border-zinc-800">
        {/* a phone's width holds the five pages' names, not the name of the product as well */}
        <span className="mr-2 hidden font-bold text-indigo-700 min-[480px]:inline dark:text-indigo-300">GroupQwen</span>
        <nav aria-label="Pages" className="flex min-w-0 gap-0.5 sm:gap-1">
          <NavLink to="/chat" className={link}>Chat</NavLink>
          <NavLink to="/dashboard" className={link}>Dashboard</NavLink>
          <NavLink to="/data" className={link}>Data</NavLink>
          <NavLink to="/jobs" className={link}>Jobs</NavLink>
          <NavLink to="/settings" className={link}>Settings</NavLink>
        </nav>
      </header>
      <main className="relative min-h-0 flex-1">
        <Suspense fallback={<p className="p-4">Loading…</p>}>
          <Outlet />
        </Suspense>
      </main>
    </div>
  );
}

const router = createBrowserRouter([
  {
    element: <Layout />,
    children: [
      { index: true, element: <Navigate to="/chat" replace /> },
      { path: "chat/:id?", element: <ChatPage /> },
      { path: "dashboard", element: <DashboardPage /> },
      { path: "data/:name?", element: <DataPage /> },
      { path: "jobs/:id?", element: <JobsPage /> },
      { path: "settings", element: <SettingsPage /> },
      { path: "*", element: <p className="p-4">No page here.</p> },
    ],
  },
]);

const queries = new QueryClient({ defaultOptions: { queries: { retry: 1, refetchOnWindowFocus: false } } });

void loadMarkdown();
void keepInterrupted(); // answers a reload cut off, back in their conversations

createRoot(document.getElementById("root") as HTMLElement).render(
  <StrictMode>
    <QueryClientProvider client={queries}>
      <RouterProvider router={router} />
    </QueryClientProvider>
  </StrictMode>,
);
