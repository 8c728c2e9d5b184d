/** The console's navigation groups, in one place so resources agree on names and icons. */
export const Navigation = {
  catalogue: { name: 'Tenants & catalogue', icon: 'Package' },
  customers: { name: 'Customers', icon: 'Users' },
  money: { name: 'Money', icon: 'DollarSign' },
  activity: { name: 'Activity', icon: 'Activity' },
  platform: { name: 'Platform', icon: 'Settings' },
} as const;
