/** IPv4 clients of a dual-stack socket come as ::ffff:a.b.c.d: the same host as a.b.c.d. */
export const plainAddress = (a: string): string => (a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
